"""`rlhf-scaling-keys`: every config key with its type, default and description, the descriptions
read from the field comments of rlhf_scaling/config.py; `rlhf-scaling --help` points to it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from rlhf_scaling import config_keys

REPO_ROOT = Path(__file__).resolve().parents[1]
# Fields that config.py does not describe yet (no comment on or above the field). Adding the comment
# there makes this test fail until the key is removed here; a NEW field without one fails at once.
PENDING: set = set()  # schema fields still without a description (none now; keep it empty)


def keys_cli(*args: str) -> subprocess.CompletedProcess:
    """The command as installed (`rlhf-scaling-keys = rlhf_scaling.config_keys:main`), run as its module
    so that it works before the package is reinstalled with the new console script."""
    return subprocess.run([sys.executable, "-m", "rlhf_scaling.config_keys", *args], capture_output=True, text=True,
                          timeout=120, env=os.environ.copy())


def test_every_schema_field_has_a_description():
    undescribed = {name for name, _, description in config_keys.schema_keys() if not description}
    assert undescribed - PENDING == set(), "describe these fields with a comment in rlhf_scaling/config.py"
    assert PENDING - undescribed == set(), "described now: remove them from PENDING"


def test_the_keys_are_the_composed_configs_keys():
    assert [n for n, _, _ in config_keys.schema_keys()] == list(config_keys._composed_defaults([]))


def test_descriptions_are_the_comments_in_config_py():
    described = {name: description for name, _, description in config_keys.schema_keys()}
    # a comment ending the field's line
    assert described["rm_train.loss"] == ("bt (pairwise) | kwise (all C(K,2) pairs, one forward per response) | "
                                          "margin (Llama 2)")
    # a block of comment lines above the field
    assert described["ppo.critic"].startswith("separate: the critic is its own transformer + a value head")
    assert described["ppo.critic"].endswith("then also trains the policy's transformer.")


def test_the_command_prints_type_default_and_description_of_a_key():
    proc = keys_cli("rm_train.loss", "policy.name")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "policy.name: str = tiny-m",  # the composed default (conf/model/tiny-m.yaml), not the dataclass's MISSING
        '    short name used in run names, plots and artifact keys ("tiny-s", "pythia-410m")',
        "rm_train.loss: str = kwise",
        "    bt (pairwise) | kwise (all C(K,2) pairs, one forward per response) | margin (Llama 2)",
    ]
    # a prefix lists a section; overrides change the defaults shown (task=jsonl needs no path to list keys)
    proc = keys_cli("--overrides", "task=jsonl", "--", "task.max_prompt_tokens")
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "task.max_prompt_tokens: int = 512"
    proc = keys_cli("ppo.kl")
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if not line.startswith(" ")] == [
        "ppo.kl_coef", "ppo.kl_horizon", "ppo.kl_estimator"]


def test_an_unknown_prefix_is_one_line_and_exit_2():
    proc = keys_cli("nosuch")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "rlhf-scaling-keys: error: no config key starts with nosuch"


def test_the_console_script_and_the_cli_help_point_to_it():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rlhf-scaling-keys"] == "rlhf_scaling.config_keys:main"
    proc = subprocess.run([str(Path(sys.executable).parent / "rlhf-scaling"), "--help"], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0
    assert "Every key with its type, default and description: rlhf-scaling-keys [prefix ...]" in proc.stdout
