# Two commands on a fresh machine:  `make study` (the embedded default study)  and  `make test`.
# Each installs what it needs itself into .venv (CPU torch from the pinned wheel, then the package).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup ds-ops study paper test test-fast test-load figures gpu-wheels clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[scale,dev]'
	touch $@

setup: $(VENV)/.installed

# DeepSpeed JIT-compiles its CPU communication op the first time it starts (about a minute on 2
# cores). Built here, into the folder the tests point TORCH_EXTENSIONS_DIR at, rather than inside
# whichever test starts DeepSpeed first; a no-op once built (and on a GPU machine, where it is not used).
TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/rlhf-scaling/torch_extensions
# A build killed midway leaves its `lock` file behind, and every later DeepSpeed start (this one and
# each test's) would wait on it forever: a lock older than 10 minutes (a build takes about one) is
# removed, and the build itself gives up after 15 minutes with a message rather than hanging.
DS_OP_DIR := $(TORCH_EXTENSIONS_DIR)/deepspeed_shm_comm
ds-ops: setup
	@if [ -n "$$(find '$(DS_OP_DIR)/lock' -mmin +10 2>/dev/null)" ]; then \
	  echo "ds-ops: removing $(DS_OP_DIR)/lock, left by a build killed more than 10 minutes ago"; rm -f '$(DS_OP_DIR)/lock'; fi
	TORCH_EXTENSIONS_DIR=$(TORCH_EXTENSIONS_DIR) timeout 900 $(BIN)/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" \
	  || { echo "ds-ops: building DeepSpeed's CPU op failed or took over 15 min; if $(DS_OP_DIR)/lock exists and no build runs, remove it" >&2; exit 1; }

study: setup
	$(BIN)/rlhf-scaling

# The paper study: miniature sweeps x 3 replicates, then claims.md and figures/ in multirun/paper/<time>/
# (README "The paper study"); add hydra/launcher=slurm slurm=<profile> to run it as one Slurm array.
paper: setup
	$(BIN)/rlhf-scaling -m +sweep=paper

# Two pytest-xdist workers (a free worker takes the next test file, slowest first; the Slurm test files
# go to one worker together: tests/conftest.py). Most of a test's wall time is a subprocess importing
# torch or a wait on Slurm, so two overlap well on 2 cores.
# PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup ds-ops
	bash slurm/local_cluster.sh start
	$(BIN)/python -m pytest -q $(XDIST) --durations=30

test-fast: setup
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow and not slurm and not distributed"

# The 200-job Slurm sweep (several minutes on 2 cores).
test-load: setup
	bash slurm/local_cluster.sh start
	$(BIN)/python -m pytest -q -m load

figures: setup
	$(BIN)/rlhf-scaling-figures --runs outputs --out figures

# Wheels a GPU machine without network needs for benchmarks/gpu/run.sh (into .whl/; see benchmarks/gpu/README.md).
gpu-wheels: setup
	PYTHON=$(PY) BUILD_PYTHON=$(BIN)/python bash benchmarks/gpu/fetch_wheels.sh

clean:
	rm -rf $(VENV) outputs multirun artifacts figures
