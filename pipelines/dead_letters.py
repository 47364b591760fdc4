"""The dead-letter budget of a job, the reasons counted, and the exit status they give.

Exit codes of every job (``kmsbeam --help`` and the README repeat this table):

==== =====================================================================================
code meaning
==== =====================================================================================
0    every record is good (or the dead letters are within ``--max-dead-letters``)
1    the job failed (a key-source failure, the KMS away, an unexpected pipeline error)
2    a usage error, found before anything was written (options, input, key, context)
3    the job finished, with dead letters over the budget (or every record failed)
130  interrupted (Ctrl-C)
==== =====================================================================================

``--max-dead-letters N`` allows N dead letters; ``--max-dead-letters 0.01`` allows 1% of the
records read (a number with a point or an exponent is a fraction; the default is 0). A job
whose every record went to the dead letters exits 3 whatever the budget.

Reasons are counted from the written dead letters (their ``reason`` is in clear, sealed or
not): exact on every runner, also one that reports no metrics. Reasons name a field and a
kind of failure, never a value.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = ["EXIT_CODES", "EXIT_CODES_HELP", "Budget", "Outcome", "add_budget_argument", "count_reasons", "finish",
           "outcome", "parse_budget", "reason_rows", "write_dead_letter_manifest"]  # fmt: skip

EXIT_CODES = (
    (0, "every record is good (or the dead letters are within --max-dead-letters)"),
    (1, "the job failed"),
    (2, "usage error, found before anything was written"),
    (3, "finished with dead letters over the budget (or every record failed)"),
    (130, "interrupted"),
)
#: the exit-code table as help text (``kmsbeam --help`` epilog)
EXIT_CODES_HELP = "exit codes:\n" + "\n".join(f"  {c:<4} {t}" for c, t in EXIT_CODES)
_WHOLE = re.compile(r"\d+")


@dataclass(frozen=True)
class Budget:
    """How many dead letters a job may have: ``count`` records, or ``fraction`` of those read."""

    count: int | None = 0
    fraction: float | None = None

    def allowed(self, records: int) -> int:
        if self.fraction is not None:
            return math.floor(self.fraction * records + 1e-9)
        return self.count or 0

    def __str__(self) -> str:
        return f"{self.fraction:g}" if self.fraction is not None else f"{self.count}"


def parse_budget(text: str) -> Budget:
    """``"12"`` -> 12 records; ``"0.01"`` -> 1% of the records read."""
    text = text.strip()
    if _WHOLE.fullmatch(text):
        return Budget(count=int(text))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            "expected a whole number of records (e.g. 10) or a fraction of the records read "
            "between 0 and 1 (e.g. 0.01)")  # fmt: skip
    return Budget(count=None, fraction=value)


def add_budget_argument(parser: Any) -> None:
    """``--max-dead-letters N|FRACTION`` (encrypt, decrypt, rotate)."""
    parser.add_argument("--max-dead-letters", type=parse_budget, default=Budget(), metavar="N",
                        help="dead letters allowed before the job exits 3: a number of records "
                        "(default 0) or a fraction of the records read such as 0.01")  # fmt: skip


def _reason_of(line: str) -> str:
    try:
        letter = json.loads(line)
    except ValueError:
        return "unreadable dead letter"
    reason = letter.get("reason") if isinstance(letter, dict) else None
    return reason if isinstance(reason, str) else "no reason given"


def count_reasons(directory: str) -> Counter[str]:
    """The dead letters under ``directory`` (``part-*`` shards) counted by reason."""
    from apache_beam.io.filesystems import FileSystems

    counts: Counter[str] = Counter()
    try:
        matched = FileSystems.match([FileSystems.join(directory, "part-*")])[0].metadata_list
    except Exception:  # noqa: BLE001 - no such directory: no dead letters
        return counts
    for meta in sorted(matched, key=lambda m: m.path):
        with FileSystems.open(meta.path) as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    counts[_reason_of(line)] += 1
    return counts


def reason_rows(reasons: Counter[str], limit: int = 8) -> list[tuple[str, str]]:
    """Summary rows ``("dead letter reasons", "N  reason")`` then ``("", "N  reason")``, most
    frequent first (past ``limit``, the rest in one row)."""
    ranked = reasons.most_common()
    values = [f"{n:,}  {reason}" for reason, n in ranked[:limit]]
    rest = sum(n for _, n in ranked[limit:])
    if rest:
        values.append(f"{rest:,}  ({len(ranked) - limit} other reasons)")
    return [("dead letter reasons" if i == 0 else "", v) for i, v in enumerate(values)]


@dataclass(frozen=True)
class Outcome:
    """The exit code of a finished job and, for 3, the one sentence saying why."""

    code: int
    message: str | None = None


def _top(reasons: Counter[str]) -> str:
    reason, n = reasons.most_common(1)[0]
    more = len(reasons) - 1
    return f"{n:,} {reason}" + (f", and {more} other reason{'s' if more > 1 else ''}" if more else "")


def outcome(records_in: int, records_out: int, reasons: Counter[str], budget: Budget,
            where: str) -> Outcome:  # fmt: skip
    """0 or 3 for a job that finished, from its dead letters (``reasons``) and ``budget``."""
    dead = sum(reasons.values())
    if not dead:
        return Outcome(0)
    where = shlex.quote(where)  # pasted into a shell as it is (a watch's: a glob)
    total = max(records_in, records_out + dead)
    if records_out == 0:
        return Outcome(3, f"every record ({dead:,}) went to the dead letters ({_top(reasons)}); "
                          f"nothing was written: fix the cause and rerun (see "
                          f"`kmsbeam dead-letters show {where}`)")  # fmt: skip
    allowed = budget.allowed(total)
    if dead > allowed:
        return Outcome(3, f"{dead:,} of {total:,} records went to the dead letters "
                          f"({_top(reasons)}), over the budget of {allowed:,} "
                          f"(--max-dead-letters {budget}); see `kmsbeam dead-letters show {where}`")  # fmt: skip
    return Outcome(0)


def finish(records_in: int, records_out: int, dead_dir: str, budget: Budget | None,
           stream: Any = None) -> int:  # fmt: skip
    """For jobs with their own table (rotate): count the reasons in ``dead_dir``, print the
    warning (within the budget) or the one-sentence error, and return 0 or 3."""
    import sys

    reasons = count_reasons(dead_dir)
    verdict = outcome(records_in, records_out, reasons, budget or Budget(), dead_dir)
    out = stream or sys.stderr
    if verdict.message:
        print(f"kmsbeam: error: {verdict.message}", file=out)
    elif reasons:
        print(f"kmsbeam: warning: {sum(reasons.values()):,} of {records_in:,} records went to the "
              f"dead letters in {dead_dir} ({_top(reasons)})", file=out)  # fmt: skip
    return verdict.code


MANIFEST = "_kmsbeam_dead_letters.json"


def write_dead_letter_manifest(plan: Any) -> None:
    """``DEAD/_kmsbeam_dead_letters.json``: the job that wrote the dead letters (its action, its
    dataset manifest: key URI, context, fields, format) so ``kmsbeam dead-letters show|replay``
    can unseal and replay them. No key material, no data."""
    from dataclasses import asdict

    from kmsbeam.pipelines import paths

    m = plan.manifest
    body = {"kmsbeam_dead_letters": 1, "action": plan.spec.action,
            "sealed": "all" if plan.spec.action == "encrypt" else "decrypted records only",
            "job": asdict(m)}  # fmt: skip
    paths.write_bytes(paths.join(str(plan.dead_dir), MANIFEST),
                      (json.dumps(body, indent=2) + "\n").encode("utf-8"), "application/json")
