#!/usr/bin/env bash
# What the new embedding, the saliency arm and full fine-tuning (and, for a model with a task
# encoder, the encoder alone and the encoder refined by the saliency arm's steps) reach from
# 200 pairs and 200 steps (a ceiling: nearly every val image of the new task), at the learning
# rates the study chose most often at k = 50, for the study runs given as arguments:
#   bash scripts/fewshot_ceiling.sh runs/fewshot-study/run_000 ...
# writes runs/fewshot-ceiling/<run>/study.json (OUT=... elsewhere); the study's report leaves
# it out (another folder). The generator is chosen on this probe, never on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/fewshot-ceiling}
for run in "$@"; do
  width=$("$PY" -c 'import sys, yaml; print(((yaml.safe_load(open(sys.argv[1])).get("model") or {}).get("task_encoder") or {}).get("width", 0))' "$run/config.yaml")
  if [ "$width" -gt 0 ]; then
    arms='[encoder, embedding, saliency, encoder_saliency, finetune_all]'; seen='[encoder, embedding, saliency, encoder_saliency]'
  else
    arms='[embedding, saliency, finetune_all]'; seen='[embedding, saliency]'
  fi
  "$PY" scripts/fewshot_probe.py "$run" "$OUT/$(basename "$run")" 'study.shots=[200]' study.draws=1 \
    'study.steps=[200]' "study.arms=$arms" \
    'study.lrs={embedding: [0.1], saliency: [0.1], encoder_saliency: [0.1], finetune_all: [0.001]}' \
    'study.seen_shots=[200]' "study.seen_arms=$seen" study.select_images=25
done
