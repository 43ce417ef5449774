"""Rules of the codebase's shape that a reviewer would otherwise check by hand: short functions,
recipes that never branch on the training engine, and no config key without a consumer."""

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest

from rlhf_scaling import config as C

PACKAGE = Path(C.__file__).parent
MAX_FUNCTION_LINES = 60
# Justified exceptions: "<file relative to the package>:<function>" -> why it is longer.
LONG_FUNCTIONS: dict = {}


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_over_60_lines():
    long = [f"{p.relative_to(PACKAGE)}:{name} ({n} lines)" for p in sorted(PACKAGE.rglob("*.py"))
            for name, n in _functions(p)
            if n > MAX_FUNCTION_LINES and f"{p.relative_to(PACKAGE)}:{name}" not in LONG_FUNCTIONS]
    assert not long, f"split these into named steps (or list them in LONG_FUNCTIONS with a reason): {long}"


def test_the_length_rule_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n")
    assert [n for _, n in _functions(tmp_path / "m.py")] == [MAX_FUNCTION_LINES + 1]


@pytest.mark.parametrize("stage", ["sft", "rm", "ppo", "bon", "dpo"])
def test_stage_recipes_never_touch_the_training_engine(stage):
    """The engine lives behind rlhf_scaling/training.py (TorchTrainer / DeepSpeedTrainer): a recipe
    may name the config section it hands over (cfg.deepspeed, deepspeed.enabled), nothing else of DeepSpeed."""
    source = (PACKAGE / "stages" / f"{stage}.py").read_text()
    code = re.sub(r"cfg\.deepspeed\b|\bdeepspeed\.enabled\b", "", source)
    assert not re.search(r"deepspeed|\bengine\b|zero3|ZeRO", code, re.IGNORECASE), \
        [line for line in code.splitlines() if re.search(r"deepspeed|\bengine\b|zero3|ZeRO", line, re.IGNORECASE)]


# ----------------------------------------------------------------------------- no config key without a consumer

# Consumed inside config.py itself, by a derived quantity the stages call (not by validation).
CONSUMED_IN_CONFIG = {"BoNConfig.n_grid": "config.bon_grid"}


def _schema_fields():
    seen, todo = [], [C.Config]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            todo += [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)]
            yield cls.__name__, f.name


def _sources():
    """Python outside config.py: attribute access `.name`, the name as a string (section lookups),
    or a keyword-only parameter of that name (a section passed as **cfg.section); and YAML
    interpolations `${...name}` (Hydra launcher settings read from the config)."""
    py = [p.read_text() for p in PACKAGE.rglob("*.py") if p != PACKAGE / "config.py"]
    yaml = [p.read_text() for p in PACKAGE.rglob("*.yaml")]  # the config tree ships inside the package
    return py, yaml


def _keyword_parameters(py) -> set:
    return {a.arg for t in py for f in ast.walk(ast.parse(t)) if isinstance(f, ast.FunctionDef)
            for a in f.args.kwonlyargs}


def unconsumed_fields(py, yaml):
    out, keywords = [], _keyword_parameters(py)
    for cls, name in _schema_fields():
        in_py = re.compile(rf"\.{name}\b|[\"']{name}[\"']")
        in_yaml = re.compile(rf"\$\{{[^}}]*\b{name}\b[^}}]*\}}")
        if f"{cls}.{name}" in CONSUMED_IN_CONFIG or name in keywords:
            continue
        if not any(in_py.search(t) for t in py) and not any(in_yaml.search(t) for t in yaml):
            out.append(f"{cls}.{name}")
    return out


def test_every_config_field_has_a_consumer():
    py, yaml = _sources()
    assert unconsumed_fields(py, yaml) == []


def test_the_consumer_check_sees_a_field_nobody_reads():
    py, yaml = _sources()
    py = [re.sub(r"\bmargin_scale\b", "renamed", t) for t in py]  # as if rm_train.margin_scale were never read
    assert unconsumed_fields(py, yaml) == ["RMTrainConfig.margin_scale"]


def test_every_test_file_that_uses_the_slurm_cluster_runs_in_the_slurm_unit():
    """Under `make test`'s two xdist workers the Slurm test files run one after another on one worker
    (tests/conftest.py SLURM_FILES): a Slurm test in any other file would run beside them, hold the
    2-CPU test cluster and make their jobs queue past their timeouts."""
    tests = PACKAGE.parent / "tests"
    # Read from the file (several folders have a conftest.py: an import could find another one).
    [assign] = [n for n in ast.parse((tests / "conftest.py").read_text()).body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SLURM_FILES"]
    SLURM_FILES = ast.literal_eval(assign.value)
    users = {str(p.relative_to(PACKAGE.parent)) for p in tests.rglob("test_*.py")
             if re.search(r"def test_\w+\([^)]*\bslurm_cluster\b", p.read_text())}
    assert users and users <= set(SLURM_FILES), sorted(users - set(SLURM_FILES))
