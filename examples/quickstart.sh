#!/usr/bin/env bash
# kmsbeam quickstart: encrypt the sample customers, decrypt them, check the round trip.
#
# Run from the repository root:   bash examples/quickstart.sh
#
# It installs kmsbeam (editable), and uses a throwaway keystore in ./.kmsbeam-demo unless
# KMSBEAM_HOME is already set (your real keystore, ~/.kmsbeam by default, is left alone).
# Output goes to out/quickstart/ and is replaced on every run.
set -euo pipefail

cd "$(dirname "$0")/.."
export KMSBEAM_HOME="${KMSBEAM_HOME:-$PWD/.kmsbeam-demo}"
echo "keystore: $KMSBEAM_HOME (set KMSBEAM_HOME to use another one)"

python -m pip install -q -e .

input=examples/customers.jsonl
enc=out/quickstart/encrypted
plain=out/quickstart/decrypted

kmsbeam encrypt "$input" "$enc" --fields ssn,email,phone --context dataset=customers --overwrite
kmsbeam decrypt "$enc" "$plain" --overwrite

echo
echo "first encrypted record:"
head -n 1 "$enc"/part-*
echo "first decrypted record:"
head -n 1 "$plain"/part-*

# Shards may hold the records in another order: compare the sorted lines.
export LC_ALL=C
if cmp -s <(sort "$input") <(cat "$plain"/part-* | sort); then
  echo "OK: $(wc -l < "$input" | tr -d ' ') records round-tripped"
else
  echo "FAILED: the decrypted records differ from $input" >&2
  exit 1
fi
