#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md records, in one go: JSON lines into $OUT (default: results/gpu).
#   bash bench/gpu.sh            # on a machine with one NVIDIA GPU
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the repo, uninstalled
{ nvidia-smi -L; nproc; python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; } > "$OUT/machine.txt" 2>&1
# The run stage on the GPU (2,000 480x640 JPEGs, overlays off and on), then its CPU-side ratios on this node.
timeout 240 python3 bench/run_speed.py --cuda --rounds 0 --n 2000 --batch 256 > "$OUT/run_speed.jsonl" 2> "$OUT/run_speed.err"
timeout 150 python3 bench/run_speed.py --rounds 1 >> "$OUT/run_speed.jsonl" 2>> "$OUT/run_speed.err"
# The run stage's GPU kernels against the host's pixels: the area resize bit for bit, maps and overlays within 1 grey level.
timeout 60 python3 -m pytest tests/test_area.py tests/test_run_maps.py -q -p no:cacheprovider -k gpu > "$OUT/run_gpu_test.txt" 2>&1
timeout 90 python3 bench/loader_speed.py --gpu > "$OUT/loader_speed.jsonl" 2> "$OUT/loader_speed.err"
timeout 60 python3 -m pytest tests/test_loader.py -q -p no:cacheprovider -k gpu > "$OUT/loader_gpu_test.txt" 2>&1   # the GPU path, bit for bit
# A worker's 2 slots: a run capped at half the GPU's memory cannot allocate 60% of it (hypersal/runner/gpu_share.py).
timeout 60 python3 -c "
import json, torch
from hypersal.runner import gpu_share
dev = torch.device('cuda'); total = torch.cuda.get_device_properties(dev).total_memory
share = gpu_share.apply(dev, {gpu_share.ENV: '0.5'})
try:
    torch.empty(int(total * 0.6), dtype=torch.uint8, device=dev); refused = False
except torch.OutOfMemoryError:
    refused = True
print(json.dumps({'bench': 'gpu_share', 'share': share, 'total_gib': round(total / 2**30, 1), 'refused_60_percent': refused}))
" > "$OUT/gpu_share.jsonl" 2>&1
timeout 330 python3 bench/train_speed.py > "$OUT/train_speed.jsonl" 2> "$OUT/train_speed.err"
# The few-shot study's draws of one task and k: one by one against vectorised (study.vectorise).
timeout 60 python3 bench/fewshot_draws.py --device cuda > "$OUT/fewshot_draws.jsonl" 2> "$OUT/fewshot_draws.err"
echo "done: $(wc -l < "$OUT/train_speed.jsonl") train lines, $(wc -l < "$OUT/run_speed.jsonl") run lines, $(wc -l < "$OUT/loader_speed.jsonl") loader lines"
