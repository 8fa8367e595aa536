#!/usr/bin/env bash
# The GPU check in one command: bench/gpu_check.sh [--dry-run] [--out DIR]
#
# On a machine without network: installs what is missing from the wheels carried in
# bench/wheels/ (bench/gpu_wheels.sh fills it), never replacing an installed package, then runs
# bench/gpu_check.py with lmtune from src/ (no install of lmtune itself is needed). --dry-run
# does the same steps on tiny models on the CPU, and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " != *" --dry-run "* ]] && compgen -G "bench/wheels/*.whl" >/dev/null; then
  for wheel in bench/wheels/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    if ! "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null; then
      echo "installing $name from bench/wheels"
      "$PY" -m pip install --quiet --no-index --no-deps --find-links bench/wheels "$name" || echo "could not install $name"
    fi
  done
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" bench/gpu_check.py "$@"
