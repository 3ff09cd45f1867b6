#!/bin/bash
# Device checks on a GPU: bf16 inference throughput and one epoch of `full`
# training.  Run from the repo root by the device tool; writes under $OUT.
set -u
OUT=${OUT:-/tmp/mprtm-device-out}; mkdir -p "$OUT"  # the device tool sets OUT
N=${N:-500}
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD MPLBACKEND=Agg
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python3 -c "import torch, transformers, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee $OUT/env.txt
# the cohort is written on the CPUs while the GPU benchmark runs
( time python3 -m cds.cli synth --patients $N --seed 5 --image-size 224 --slices 12 --out /tmp/c --quiet ) > $OUT/synth.log 2>&1 &
SP=$!
timeout ${BENCH_S:-240} python3 benchmarks/bench_gpu.py --text-encoder .gpu/minilm --cpu-threads 8 --cpu-patients 4 --json $OUT/bench_gpu.json > $OUT/bench_gpu.log 2>&1
echo "bench rc=$? at $(( $(date +%s) - t0 )) s"; grep -v -i warn $OUT/bench_gpu.log | tail -40
wait $SP; echo "synth at $(( $(date +%s) - t0 )) s"; tail -4 $OUT/synth.log
( time timeout ${TRAIN_S:-300} python3 -m cds.cli train --data /tmp/c --out /tmp/ck/full.pt --preset full --epochs 1 --fusion-epochs 1 --device cuda --text-encoder .gpu/minilm ) > $OUT/train.log 2>&1
echo "train rc=$? at $(( $(date +%s) - t0 )) s"
tr '\r' '\n' < $OUT/train.log | grep -E "100%|wrote|Error|error|real|Traceback" | tail -40
cp /tmp/ck/full.curves.png /tmp/ck/full.md $OUT/ 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv
