#!/usr/bin/env bash
# Fetch the wheels of benchmarks/gpu/wheels.txt for the GPU machine (CPython 3.12, manylinux x86-64) into
# an ignored folder (default .whl/), on a machine with the package index; prints the total and fails if
# it is over 64 MiB (what a device run may carry, the working tree included).
#   bash benchmarks/gpu/fetch_wheels.sh [DEST]
# Binaries: pip download --only-binary=:all: for the GPU machine's platform. Sdists (marked "# sdist"):
# pip wheel --no-deps, built by the project's venv (deepspeed's setup.py imports torch, so no build
# isolation; DS_BUILD_OPS=0 compiles no op), then checked to be pure Python (py3-none-any, no .so).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.whl}
LIST=benchmarks/gpu/wheels.txt
PY=${PYTHON:-python3}               # any pip; downloads for another Python and platform
BUILD_PY=${BUILD_PYTHON:-.venv/bin/python}  # builds the sdists: needs torch (deepspeed's setup.py)
LIMIT=$((64 * 1024 * 1024))

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the offline install
pins() { grep -v '^[[:space:]]*#' "$LIST" | sed 's/#.*sdist.*/ SDIST/; s/#.*//' | awk 'NF' ; }
binaries=$(pins | awk '$2 != "SDIST" {print $1}')
sdists=$(pins | awk '$2 == "SDIST" {print $1}')

# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d "$DEST" $binaries
# shellcheck disable=SC2086
DS_BUILD_OPS=0 "$BUILD_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" $sdists

for whl in "$DEST"/*.whl; do  # every built sdist must be pure Python: nothing compiled for this machine
  case "$whl" in *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp312-*|*-py312-*) ;; *) echo "unexpected wheel tag: $whl" >&2; exit 1 ;; esac
done
for name in $sdists; do
  whl=$(ls "$DEST"/"$(echo "${name%%==*}" | tr - _)"-*.whl)
  if "$PY" -m zipfile -l "$whl" | grep -q '\.so'; then echo "$whl holds compiled code" >&2; exit 1; fi
done

count=$(ls "$DEST"/*.whl | wc -l)
expected=$(pins | wc -l)
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
ls -l "$DEST"/*.whl | awk '{printf "%10d  %s\n", $5, $9}'
awk -v c="$count" -v t="$total" -v d="$DEST" 'BEGIN { printf "total: %d wheels, %d bytes (%.1f MiB) in %s; limit 64 MiB\n", c, t, t / 1048576, d }'
if [ "$count" -ne "$expected" ]; then echo "expected $expected wheels (one per line of $LIST), got $count" >&2; exit 1; fi
if [ "$total" -gt "$LIMIT" ]; then echo "over the 64 MiB a device run may carry" >&2; exit 1; fi
