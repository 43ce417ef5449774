#!/usr/bin/env bash
# The GPU benchmark of issue 17 (benchmarks/gpu/README.md): every figure in one report.
#   bash benchmarks/gpu/run.sh --out DIR           on one H100/H200-class GPU, under 8 minutes
#   bash benchmarks/gpu/run.sh --smoke --out DIR   on CPU, tiny shapes, two steps each (CI runs this)
# Without --smoke, the wheels in .whl/ (benchmarks/gpu/fetch_wheels.sh) are installed offline first, into
# a target folder put on PYTHONPATH behind this checkout, whose package is imported as source.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SITE=${GPU_BENCH_SITE:-/tmp/gpu-bench-site}
extra=""
if [[ " $* " != *" --smoke "* ]] && compgen -G ".whl/*.whl" >/dev/null; then
  if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    extra=":$SITE"
  else
    echo "note: .whl/ holds wheels for CPython 3.12 (the GPU image's); $("$PY" -V) does not install them" >&2
  fi
fi
export PYTHONPATH="$PWD${extra}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/gpu/run.py "$@"
