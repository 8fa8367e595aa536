#!/usr/bin/env bash
# Fills bench/wheels/ (ignored by git) with what bench/gpu_check.sh installs on a GPU machine
# without network: lmtune's own imports that a CUDA image with torch, transformers, peft and
# accelerate lacks (pydantic), and the optional GPU packages (bitsandbytes, the official
# package; liger-kernel). Compiled wheels (pydantic-core) are fetched for each Python of
# $GPU_PYTHONS (default 3.10 to 3.13), and pip there picks the one that fits. About 50 MB in all:
# carry bench/wheels with the working tree (the device tool's 64 MiB limit). --with-trl adds TRL
# and datasets; pyarrow alone is about 40 MB a Python version, so set GPU_PYTHONS to the GPU
# machine's one version and leave bitsandbytes out (--without-bitsandbytes). --with-deepspeed
# adds DeepSpeed (built here into a wheel: it ships as source only; its kernels build when used)
# and its dependencies, about 3 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=bench/wheels
mkdir -p "$out"
versions=${GPU_PYTHONS:-3.10 3.11 3.12 3.13}
version_of() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
pure=("pydantic==$(version_of pydantic)" annotated-types typing-inspection typing-extensions liger-kernel)
[[ " $* " != *" --without-bitsandbytes "* ]] && pure+=(bitsandbytes)
"$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$out" "${pure[@]}"
core=$(version_of pydantic-core)
for version in $versions; do
  "$PY" -m pip download --quiet --no-deps --only-binary :all: --python-version "$version" --platform manylinux2014_x86_64 \
    -d "$out" "pydantic-core==$core"
done
if [[ " $* " == *" --with-deepspeed "* ]]; then
  "$PY" -m pip wheel --quiet --no-deps -w "$out" "deepspeed==$(version_of deepspeed)"
  "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$out" hjson py-cpuinfo einops nvidia-ml-py
  for version in $versions; do
    "$PY" -m pip download --quiet --no-deps --only-binary :all: --python-version "$version" --platform manylinux2014_x86_64 \
      -d "$out" msgpack ninja
  done
fi
if [[ " $* " == *" --with-trl "* ]]; then
  "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$out" trl datasets dill xxhash multiprocess fsspec
  for version in $versions; do
    "$PY" -m pip download --quiet --no-deps --only-binary :all: --python-version "$version" --platform manylinux2014_x86_64 \
      -d "$out" pyarrow
  done
fi
du -sh "$out"
