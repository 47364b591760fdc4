"""Write deterministic synthetic customer records (no real person's data) for the examples.

Usage (from the repository root)::

    python examples/make_customers.py                 # examples/customers.jsonl and .csv
    python examples/make_customers.py -n 50 --out /tmp/c.jsonl --csv /tmp/c.csv

Each record: ``id`` (int), ``name``, ``ssn``, ``email``, ``phone``, a nested ``address``
(street, city, zip) and a ``signup`` date string. The JSONL is written in the compact style
of ``kmsbeam decrypt`` (``json.dumps(record, ensure_ascii=False, separators=(",", ":"))``),
so a round trip through ``kmsbeam encrypt``/``decrypt`` gives the same lines byte for byte.
The CSV holds the same data with the address flattened into ``street, city, zip`` columns.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

FIRST = ["Ana", "Bruno", "Chen", "Dana", "Élodie", "Farid", "Grace", "Hiro", "Ines", "José",
         "Kaya", "Liam", "Mei", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sven", "Zoë"]
LAST = ["Alvarez", "Brown", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Hughes",
        "Ivanova", "Jensen", "Kim", "López", "Müller", "Nakamura", "O'Neil", "Patel",
        "Quispe", "Rossi", "Smith", "Wang"]
STREETS = ["Main St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Elm St", "Lake View",
           "Hill Rd", "River Way", "Park Pl"]
CITIES = ["Springfield", "Riverton", "Fairview", "Georgetown", "Salem", "Madison", "Clinton",
          "Franklin", "Greenville", "Bristol"]
DOMAINS = ["example.com", "example.org", "example.net"]


def customer(i: int, rng: random.Random) -> dict[str, Any]:
    """One synthetic customer (SSNs use area 9xx, which is never issued)."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    user = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
    street = f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}"
    if rng.random() < 0.1:  # some commas, so the CSV has quoted fields
        street += f", Apt {rng.randrange(1, 40)}"
    signup = dt.date(2019, 1, 1) + dt.timedelta(days=rng.randrange(0, 5 * 365))
    return {
        "id": i,
        "name": f"{first} {last}",
        "ssn": f"9{rng.randrange(0, 100):02d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}",
        "email": f"{user}{i}@{rng.choice(DOMAINS)}",
        "phone": f"+1-555-{rng.randrange(100, 1000):03d}-{rng.randrange(0, 10000):04d}",
        "address": {
            "street": street,
            "city": rng.choice(CITIES),
            "zip": f"{rng.randrange(0, 100000):05d}",
        },
        "signup": signup.isoformat(),
    }


def customers(n: int, seed: int = 20240601) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [customer(i, rng) for i in range(1, n + 1)]


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    columns = ["id", "name", "ssn", "email", "phone", "street", "city", "zip", "signup"]
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in records:
            flat = {**{k: v for k, v in r.items() if k != "address"}, **r["address"]}
            w.writerow([flat[c] for c in columns])


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="number of records (default 1000)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--out", type=Path, default=here / "customers.jsonl")
    parser.add_argument("--csv", type=Path, default=here / "customers.csv")
    args = parser.parse_args()
    records = customers(args.n, args.seed)
    write_jsonl(records, args.out)
    write_csv(records, args.csv)
    print(f"wrote {len(records)} records to {args.out} and {args.csv}")


if __name__ == "__main__":
    main()
