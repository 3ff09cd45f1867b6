#!/bin/bash
# One epoch of `full` training on CUDA; run by the device tool from the repo root.
set -u
OUT=${OUT:-/tmp/mprtm-device-out}; mkdir -p "$OUT"  # the device tool sets OUT
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD MPLBACKEND=Agg
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
( time python3 -m cds.cli synth --patients 500 --seed 5 --image-size 224 --slices 12 --out /tmp/c --quiet ) > $OUT/synth.log 2>&1
echo "synth rc=$? at $(( $(date +%s) - t0 )) s"
( time timeout 290 python3 -m cds.cli train --data /tmp/c --out /tmp/ck/full.pt --preset full --epochs 1 --fusion-epochs 1 --device cuda --text-encoder .gpu/minilm ) > $OUT/train.log 2>&1
echo "train rc=$? at $(( $(date +%s) - t0 )) s"
tr '\r' '\n' < $OUT/train.log | grep -E "100%|wrote|Error|error|real|Traceback|File " | uniq | tail -45
cp /tmp/ck/full.curves.png /tmp/ck/full.md $OUT/ 2>/dev/null
