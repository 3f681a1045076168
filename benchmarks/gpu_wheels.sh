#!/usr/bin/env bash
# Wheels for a GPU machine that cannot download: the packages fusechat needs that such an image usually lacks or
# holds in a version below our range, for its Python (3.12 by default), into .whl/ (git-ignored).
# The GPU image this project is checked on has torch, triton, accelerate, tokenizers, safetensors, pyarrow, numpy,
# numba, pandas and pyyaml already, but transformers 5.17 (we need >= 5.23), no pydantic, no rapidfuzz, no gguf
# and no Liger-Kernel (the loss benchmark's yardstick). Versions come from constraints.txt where it names them.
#   bash benchmarks/gpu_wheels.sh            # then carry .whl and start the GPU command with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   PYTHON_VERSION=3.11 bash benchmarks/gpu_wheels.sh   # for another Python
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYTHON_VERSION:-3.12}
pin() { grep -i -m1 "^$1==" constraints.txt || echo "$1"; }
NAMES=(transformers huggingface_hub pydantic pydantic_core annotated-types typing-inspection RapidFuzz gguf)
SPECS=(); for n in "${NAMES[@]}"; do SPECS+=("$(pin "$n")"); done
SPECS+=("liger-kernel==0.8.5")
PLAT=(); for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLAT+=(--platform "${p}_x86_64"); done
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${PLAT[@]}" -d .whl "${SPECS[@]}"
du -sh .whl; ls .whl
