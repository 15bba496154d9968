#!/usr/bin/env bash
# The few-shot study, larger, on one GPU (bench/fewshot_gpu.yaml.in, a template: 3,000 images,
# 4,000 training steps, budgets up to 100 steps, the task encoder and its arms). Every run of
# every fold starts at once (the runs are small: one GPU holds them all, each process drives it
# from its own CPU core), and each fold's figures are written as soon as its runs end:
#   bash bench/fewshot_gpu.sh            # OUT=runs by default; figures in $OUT/fewshot-figures/after-<family>
# Written to take under 8 minutes on one H100/H200 with 16 cores; NOT RUN YET (no GPU session had
# the time): the first run on a GPU machine is its test. On the CPU, fewshot_study.yaml is the study.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs}
BASE="$OUT/fewshot-gpu"
FAMILIES="frequency contrast region prior"
mkdir -p "$BASE"
start=$(date +%s)
for F in $FAMILIES; do
  sed "s/FAMILY/$F/g" bench/fewshot_gpu.yaml.in > "$BASE/fewshot_gpu_$F.yaml"
  "$PY" experiment.py -e "$BASE/fewshot_gpu_$F.yaml" --base-dir "$BASE" --executor=local --dry-run --no-snapshot
done
# One reference run first: it generates the dataset the others then share.
first="$BASE/fewshot-gpu-frequency/run_003"
"$PY" train.py --config "$first/config.yaml" > "$first/gpu.out" 2>&1
declare -A PIDS
for F in $FAMILIES; do
  for run in "$BASE/fewshot-gpu-$F"/run_*; do
    [ "$run" = "$first" ] && continue
    "$PY" train.py --config "$run/config.yaml" > "$run/gpu.out" 2>&1 &
    PIDS[$F]="${PIDS[$F]:-} $!"
  done
done
done_folds=()
for F in $FAMILIES; do
  status=0
  for pid in ${PIDS[$F]}; do wait "$pid" || status=$?; done
  [ "$status" = 0 ] || echo "fewshot_gpu: a run of fold $F failed (see $BASE/fewshot-gpu-$F/run_*/gpu.out)" >&2
  done_folds+=("$BASE/fewshot-gpu-$F")
  "$PY" -m hypersal.study.report "${done_folds[@]}" --out "$OUT/fewshot-figures/after-$F" > /dev/null
  echo "fewshot_gpu: fold $F done after $(( $(date +%s) - start )) s: $OUT/fewshot-figures/after-$F"
done
