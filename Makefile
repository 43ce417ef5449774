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
ds-ops: setup
	TORCH_EXTENSIONS_DIR=$(TORCH_EXTENSIONS_DIR) $(BIN)/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"

study: setup
	$(BIN)/rlhf-scaling

# The paper study: miniature sweeps x 3 replicates, then claims.md and figures/ in multirun/paper/<time>/
# (README "The paper study"); add hydra/launcher=slurm slurm=<profile> to run it as one Slurm array.
paper: setup
	$(BIN)/rlhf-scaling -m +sweep=paper

test: setup ds-ops
	bash slurm/local_cluster.sh start
	$(BIN)/python -m pytest -q --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not slurm and not distributed"

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
