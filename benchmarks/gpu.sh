#!/usr/bin/env bash
# The GPU check, one script: the CUDA tests, model throughput at 64 and 150 px, and a short training shaped like
# configs/common_test_i.yaml on simulated Model I images (150 px, online: nothing on disk). Every figure lands in
# OUT (default: $OUT, else runs/gpu) as text; docs/models.md ("Throughput") and TRAINING.md quote them.
#
#   bash benchmarks/gpu.sh [OUT]          # with d4lenspinn installed (make install); PYTHON picks the interpreter
#
# About 10 minutes on one H100: the tests ~1 min, the throughput table ~3 min, the training ~5 min.
set -euo pipefail
out=${1:-${OUT:-runs/gpu}}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing to check")'
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } | tee "$out/machine.txt"

echo "== CUDA tests"
"$python" -m pytest -q -m cuda tests 2>&1 | tee "$out/cuda_tests.txt"

echo "== throughput (benchmarks/models.py)"
"$python" benchmarks/models.py --device cuda --sizes 64 150 --repeats 10 5 --batch 64 \
    --models d4lenspinn_lens d4lenspinn_fit d4_cnn resnet18 efficientnetv2_b0 \
    --lens-set trunk_pool=2 --lens-set head_pool=2 2>&1 | tee "$out/models_cuda.md"

echo "== a short Common Test I-shaped training on simulated Model I images"
start=$(date +%s)
"$python" -m d4lenspinn train --config configs/common_test_i.yaml --overwrite \
    --set data.source=simulate-online --set data.preset=model_i --set data.n_per_class=2000 \
    --set data.n_val_per_class=250 --set optim.epochs=2 --set out="$out/common_test_i_sim" 2>&1 \
    | tee "$out/train.txt"
echo "training wall time: $(( $(date +%s) - start )) s for 2 epochs of 6,000 images" | tee -a "$out/train.txt"
"$python" -m d4lenspinn evaluate --checkpoint "$out/common_test_i_sim/best.pt" 2>&1 | tee "$out/evaluate.txt"
