#!/usr/bin/env bash
# One prepared check of the scale-out work on a machine with a GPU (about 3-4 minutes, at most 5):
# fp16 (loss scaling, overflow steps skipped and counted) and bf16 tiny trainings on 1 GPU, DeepSpeed
# ZeRO-2 on 1 GPU, FSDP2 on 1 GPU (save + resume), and BERT-base bf16 throughput / MFU for sat_accel vs a
# hand-written Accelerate loop vs HF Trainer. Parts whose package is missing (deepspeed, ...) are skipped
# with the reason. Prints a summary; writes summary.md, summary.json and gpu_check.log to $OUT when set
# (else to /tmp/sat_gpu_check).
#   bash scripts/gpu_check.sh            # on the GPU machine, from any folder
#   bash scripts/gpu_check.sh --smoke    # tiny sizes on CPU: checks that the script itself works
#   bash scripts/gpu_check.sh fsdp bf16  # only some cases
set -uo pipefail
cd "$(dirname "$0")/.."
work=/tmp/sat_gpu_check
rm -rf "$work" && mkdir -p "$work"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
timeout 290 python3 scripts/gpu_check.py all --out "$work" "$@" 2>&1 | tee "$work/gpu_check.log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$work/gpu_check.log" "$OUT/" 2>/dev/null
  cp "$work/summary.md" "$work/summary.json" "$OUT/" 2>/dev/null || echo "no summary (status $status)" > "$OUT/summary.md"
fi
exit "$status"
