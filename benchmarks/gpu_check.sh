#!/usr/bin/env bash
# The one device run for issue #23 (point 6), for a session that is lent a GPU: `reel bench` on the Wan 2.1 T2V 1.3B
# config (random weights at real size) over every path, recorded, then a CUDA smoke run of every feature on the
# built-in model (benchmarks/cuda_smoke.py). At most 8 minutes (its timeouts: 330 s + 120 s, plus set-up); not yet run on a GPU.
#
#   here, once:      bash benchmarks/gpu_check.sh --wheels          # the wheels the device image lacks -> .whl/
#   dry run here:    DEVICE=cpu SHRINK=1 RECORD= NO_WHEELS=1 PY=.venv/bin/python bash benchmarks/gpu_check.sh /tmp/g
#   on the device:   run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=540)
#
# It records into benchmarks/RESULTS.md and engine/measured_speedups.json on that machine: copy both back from
# $OUT (they are copied there at the end) and commit them.
set -uo pipefail
if [ "${1:-}" = "--wheels" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    ftfy==6.3.1 wcwidth==0.9.4 spandrel==0.4.2 opentimelineio==0.18.1 imageio-ffmpeg==0.6.0
  du -sh .whl; exit $?
fi
OUT=${1:?usage: gpu_check.sh OUT  (or --wheels)}
DEVICE=${DEVICE:-cuda}
RECORD=${RECORD---record}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# reel without installing it: the three folders as the namespace package `reel`
mkdir -p /tmp/reelpkg/reel
for part in engine models kernels; do ln -sfn "$PWD/$part" "/tmp/reelpkg/reel/$part"; done
export PYTHONPATH="/tmp/reelpkg:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"
if [ -n "${SHRINK:-}" ]; then SIZE="--shrink --width 64 --height 64 --frames 5 --steps 2"; else SIZE="--steps 6"; fi
# 1. reel bench: 832x480, 81 frames, 6 steps, guidance 5 (the model's defaults), every path, one timed round
#    (the sides still waiting when --budget runs out are reported as not run; the results are written either way)
PATHS=default,plain,cudnn,flash3,fused-kernels,compile-regional,cuda-graphs,fp8-matmul,lossy
timeout 330 $PY -m reel.engine.cli bench wan2.1-t2v-1.3b --device "$DEVICE" $SIZE --rounds 1 --paths $PATHS \
  --budget 260 $RECORD --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
# 2. every feature on the built-in model, and image-to-video on a tiny folder
timeout 120 $PY -m benchmarks.cuda_smoke --device "$DEVICE" --out /tmp/smoke 2>&1 | tail -40 | tee "$OUT/smoke.log"
cp /tmp/smoke/smoke.json "$OUT/" 2>/dev/null
cp benchmarks/RESULTS.md engine/measured_speedups.json "$OUT/" 2>/dev/null
rm -rf "$OUT/bench/clips"
ls -la "$OUT"
