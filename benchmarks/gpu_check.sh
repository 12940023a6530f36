#!/usr/bin/env bash
# GPU readiness of the real configuration, in one go (under 8 minutes on one H100/H200):
#
#   1. the real-configuration tests (tests/realconfig: resnet50 / vitb32 / CLIP vision + text
#      phases at 224 px through the normal weights path) on CUDA: bf16 autocast, channels_last,
#      DataLoader workers > 0;
#   2. training and extraction throughput of the library loops against plain PyTorch loops for
#      resnet50, vitb32 and clip at 224 px, batch 256, torch.compile off and on; prints the
#      library/plain ratios (1.0 = the library adds nothing; data loading, augmentation, the
#      scheduler and clipping are what it adds).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (needs CUDA)
#   bash benchmarks/gpu_check.sh --cpu-smoke  # seconds on CPU: same scripts, tiny sizes (CI)
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_WORKERS (default 8),
# GPU_CHECK_OUT (a folder for the logs, default a temp folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
OUT="${GPU_CHECK_OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
MODE="${1:-gpu}"
SECONDS=0

if [ "$MODE" = "--cpu-smoke" ]; then
  DEVICE=cpu; WORKERS=0; BATCH=4; SIZE=32; STEPS=1; WARMUP=1; BATCHES=1; REPEATS=1
  MODELS="resnet18"; TINY=; COMPILES="off"  # the same loop as GPU mode, one small model
  "$PY" -m pytest -q -p no:cacheprovider --collect-only tests/realconfig > "$OUT/realconfig.log"
  echo "realconfig tests collected: $(grep -c '::' "$OUT/realconfig.log" || true) (run on CUDA only in GPU mode)"
elif [ "$MODE" = "gpu" ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --cpu-smoke')"
  DEVICE=cuda; WORKERS="${GPU_CHECK_WORKERS:-8}"; BATCH=256; SIZE=224; STEPS=15; WARMUP=5
  BATCHES=8; REPEATS=2; MODELS="resnet50 vitb32 clip"; TINY=; COMPILES="off on"
  "$PY" -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
  echo "== real-configuration tests on CUDA (bf16, channels_last, $WORKERS workers)"
  COMPCARS_REALCONFIG_DEVICE=cuda COMPCARS_REALCONFIG_WORKERS=4 \
    "$PY" -m pytest -q -p no:cacheprovider tests/realconfig 2>&1 | tee "$OUT/realconfig.log" | tail -3
  echo "   ($SECONDS s)"
else
  echo "usage: $0 [--cpu-smoke]" >&2; exit 2
fi

summary=()
for model in $MODELS; do
  for compile in $COMPILES; do
    flag=$([ "$compile" = on ] && echo --compile || true)
    log="$OUT/train_${model}_compile-${compile}.log"
    "$PY" benchmarks/train_throughput.py --device "$DEVICE" --model "$model" $TINY \
      --image-size "$SIZE" --batch-size "$BATCH" --steps "$STEPS" --warmup-steps "$WARMUP" \
      --repeats "$REPEATS" --num-workers "$WORKERS" $flag > "$log" 2>&1 \
      || { tail -20 "$log"; echo "train_throughput failed: $log" >&2; exit 1; }
    train=$(grep -o 'ratio library/plain = [0-9.]*' "$log" | awk '{print $NF}')
    lib=$(awk '$1 == "library" {print $2}' "$log")
    log="$OUT/extract_${model}_compile-${compile}.log"
    "$PY" benchmarks/extract_throughput.py --device "$DEVICE" --model "$model" $TINY \
      --image-size "$SIZE" --batch-size "$BATCH" --batches "$BATCHES" --views 1 \
      --repeats "$REPEATS" --num-workers "$WORKERS" $flag > "$log" 2>&1 \
      || { tail -20 "$log"; echo "extract_throughput failed: $log" >&2; exit 1; }
    extract=$(awk '/^ratio/ {print $NF}' "$log")
    elib=$(awk '/^extract_embeddings/ {print $(NF-1)}' "$log")
    summary+=("$(printf '%-9s %-8s %12s %10s %12s %10s' "$model" "$compile" "$lib" "$train" "$elib" "$extract")")
    echo "   $model compile=$compile done ($SECONDS s)"
  done
done

echo
echo "== library vs plain loops, $DEVICE, ${SIZE}px, batch $BATCH (ratio = library / plain throughput)"
printf '%-9s %-8s %12s %10s %12s %10s\n' model compile "train img/s" "train x" "embed img/s" "embed x"
printf '%s\n' "${summary[@]}"
echo "total ${SECONDS}s; logs in $OUT"
