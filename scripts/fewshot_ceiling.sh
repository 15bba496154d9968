#!/usr/bin/env bash
# What the new embedding, the saliency arm and full fine-tuning reach from 200 pairs and 200
# steps (a ceiling: nearly every val image of the new task), at the learning rates the study
# chose most often at k = 50, for the study runs given as arguments:
#   bash scripts/fewshot_ceiling.sh runs/fewshot-study/run_000 ...
# writes runs/fewshot-ceiling/<run>/study.json (OUT=... elsewhere); the study's report leaves
# it out (another folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/fewshot-ceiling}
for run in "$@"; do
  "$PY" scripts/fewshot_probe.py "$run" "$OUT/$(basename "$run")" 'study.shots=[200]' study.draws=1 \
    'study.steps=[200]' 'study.arms=[embedding, saliency, finetune_all]' \
    'study.lrs={embedding: [0.1], saliency: [0.1], finetune_all: [0.001]}' \
    'study.seen_shots=[200]' 'study.seen_arms=[embedding, saliency]' study.select_images=25
done
