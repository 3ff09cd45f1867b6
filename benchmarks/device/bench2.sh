#!/bin/bash
# bench_gpu.py again with Predictor.encode_images (several series per pass); no train steps.
set -u
OUT=${OUT:-/tmp/mprtm-device-out}; mkdir -p "$OUT"  # the device tool sets OUT
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD MPLBACKEND=Agg
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
timeout 200 python3 benchmarks/bench_gpu.py --text-encoder .gpu/minilm --cpu-threads 8 --cpu-patients 4 --train-repeat 0 --json $OUT/bench_gpu2.json > $OUT/bench_gpu2.log 2>&1
echo "bench rc=$? at $(( $(date +%s) - t0 )) s"
grep -v -i -E "warn|Loading weights" $OUT/bench_gpu2.log | tail -30
