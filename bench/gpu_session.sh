#!/usr/bin/env bash
# The GPU figures the README is waiting for, in one run of under ten minutes on one H200 (the device
# tool's single call): the cuDNN attention check, the training-step table for the current presets
# (LFQ's one-GEMM entropy and the ViT's fused attention since the last table), Cosmos DV4x8x8 encode.
# Run from the repository root; WHEELS=DIR installs wheels the machine lacks (ml_collections) first.
set -x
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
timeout 60 python3 bench/attention.py
timeout "${TRAIN_S:-440}" python3 bench/train.py --preset=llamagen_vq16 --preset=magvit2_lfq --preset=bsq_vit \
  --batch=176,96,40 --dtype=bfloat16 --gan_only --lpips --parallel_compile=/tmp/xla_cache --breakdown --steps=5
timeout 60 python3 bench/cosmos_encode.py --repeats=5
timeout 60 python3 bench/cosmos_encode.py --repeats=5 --dtype=bfloat16 --batch=4
