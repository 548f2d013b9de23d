#!/usr/bin/env bash
# The GPU checks in one run (about 6-8 minutes on an H100-class card):
#   1. bench_train: reference setting (fp32, NCHW, 256x768, batch 8) vs ours (mixed precision,
#      channels_last) per encoder; largest batch at 256x1600; B4 at 256x1600 batch 16 peak memory
#   2. bench_infer: images/s at 256x1600 with TTA none / h / hv (target: B4 + hv >= 200 images/s)
#   3. a real CUDA training run (EfficientNet-B4, 256x768, bf16) on a synthetic set, then predict
#
#   bash bench/gpu_check.sh [OUT_DIR]        # results and logs go to OUT_DIR (default bench/results)
#
# On a machine that has torch and Lightning but not segmentation-models-pytorch or
# albumentations, put their wheels (and the ones they need that are missing) in .whl/ first;
# they are installed into /tmp/site and put on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, lightning, segmentation_models_pytorch as smp, albumentations as A; \
print('torch', torch.__version__, 'lightning', lightning.__version__, 'smp', smp.__version__, 'albumentations', A.__version__)" \
  | tee -a "$out/gpu.txt"

python3 bench/bench_train.py --device cuda --steps 10 --warmup 3 2>&1 | tee "$out/bench_train_cuda.log"
python3 bench/bench_infer.py --device cuda --files 2>&1 | tee "$out/bench_infer_cuda.log"
cp bench/results/bench_*_cuda.json "$out/" 2>/dev/null || true

syn=/tmp/steelnb-gpu-synthetic
python3 -m steelnb.cli synth "$syn" --images 400 --seed 0
python3 -m steelnb.cli train --data-dir "$syn" --subset all --device cuda --encoder efficientnet-b4 \
  --height 256 --width 768 --epochs 6 --batch-size 16 --early-stopping-patience 0 \
  --out-dir /tmp/steelnb-gpu-weights --run-name cuda_b4 2>&1 | tail -n 20 | tee "$out/train_cuda.log"
cp /tmp/steelnb-gpu-weights/cuda_b4/metrics.json "$out/train_cuda_metrics.json"
python3 -m steelnb.cli predict --weights /tmp/steelnb-gpu-weights/cuda_b4 --images "$syn/test_images" \
  --out /tmp/steelnb-gpu-pred --tta hv --batch-size 16 2>&1 | tail -n 5 | tee "$out/predict_cuda.log"
