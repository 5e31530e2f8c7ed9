#!/usr/bin/env bash
# A new domain from nothing to a report, timed stage by stage, with the documented CLI only:
# fetch the raw data, check it, train the adapter, evaluate the three variants (answers uncached).
#   bash bench/questions_end_to_end.sh
# Nothing else may run on the machine meanwhile. The adapter lands in adapters/questions-lora (replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
A=.venv/bin/assistant
started=$(date +%s)
stage() { local name=$1; shift; local t0; t0=$(date +%s); "$@"; echo "stage $name: $(( $(date +%s) - t0 )) s" >&2; }
rm -f data/questions/*.jsonl
stage fetch $PY scripts/fetch_questions.py
stage check $A data check --config configs/questions-train.yaml
stage train $A train configs/questions-train.yaml --overwrite --quiet
stage eval $A eval eval/suites/questions.yaml --no-cache --quiet
echo "raw data to report: $(( $(date +%s) - started )) s" >&2
