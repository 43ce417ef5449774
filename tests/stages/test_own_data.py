"""A researcher's own data and models, through the CLI as they would run it (issue 12, items 1, 4-7).

Their preference JSONL and local model directories (tests/stages/local_inputs.py) -> RM -> best-of-n
and PPO on the file's held-out prompts (or their own prompt file), scored by their gold RM; edited,
truncated, emptied or deleted inputs are rebuilt or refused, never answered with the old result;
wrong gold directories, impossible configs and an unreachable hub are one-line errors; the
"build it with:" hint of a missing artifact builds exactly that artifact.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest

from local_inputs import cli, cli_together, preference_lines, save_model_dir, write_lines

pytestmark = pytest.mark.slow

SMALL = ["task.max_prompt_tokens=8", "task.max_response_tokens=16", "data.n_eval_prompts=16", "model@rm=tiny-xs",
         "rm_train.epochs=1", "rm_train.batch_size=8", "bon.n_max=4", "bon.n_eval_prompts=8", "ppo.steps=2",
         "ppo.prompts_per_step=4", "ppo.minibatch_size=4", "progress=false"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's folder: prefs.jsonl, a policy dir, a gold RM dir (with its head), a causal LM dir."""
    root = tmp_path_factory.mktemp("user")
    write_lines(root / "prefs.jsonl", preference_lines(200))
    save_model_dir(root / "policy", seed=0)
    save_model_dir(root / "gold", seed=5, kind="scorer")
    save_model_dir(root / "causal", seed=6)
    return root


def own(root: Path, store: str = "artifacts") -> list:
    return ["task=jsonl", f"task.path={root / 'prefs.jsonl'}", "model@policy=local",
            f"policy.name_or_path={root / 'policy'}", f"artifacts_dir={root / store}", *SMALL]


def env(root: Path) -> dict:
    return {"XDG_CACHE_HOME": str(root / "cache")}


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def built(root: Path, kind: str) -> list:
    """The complete artifacts of a kind (folders with COMPLETE), by name."""
    return sorted(p.name for p in (root / kind).glob("*") if (p / "COMPLETE").is_file())


def test_best_of_n_and_ppo_on_own_data_with_local_models_and_a_model_gold(user):
    """The README's own-data command sequence: data -> RM -> best-of-n on the file's held-out
    prompts -> PPO on the user's own prompt file, every model a local directory."""
    rm = ["model@rm=local", f"rm.name_or_path={user / 'policy'}"]
    gold = ["gold=model", f"gold.name_or_path={user / 'gold'}"]
    for stage in ("data", "rm"):
        proc = cli([f"stage={stage}", *own(user), *rm], user, env(user))
        assert proc.returncode == 0, proc.stderr[-3000:]
    # Best-of-n, PPO on the user's own prompt file, and the same with a prompt file that is missing
    # (named in a one-line error) or a causal LM as gold (item 4: it would score with a random head;
    # refused, naming the path): four commands on the same data and RM, started together.
    prompts, missing = user / "prompts.jsonl", user / "missing.jsonl"
    write_lines(prompts, [json.dumps({"prompt": f"about ocean : {w}"}) for w in ("wave", "tide", "salt")])
    bon, ppo, no_prompts, bad_gold = cli_together([
        ["stage=bon", *own(user), *rm, *gold, f"hydra.run.dir={user / 'runs/bon'}"],
        ["stage=ppo", *own(user), *rm, *gold, f"task.prompts_path={prompts}", f"hydra.run.dir={user / 'runs/ppo'}"],
        ["stage=ppo", *own(user), *rm, *gold, f"task.prompts_path={missing}"],
        ["stage=bon", *own(user), *rm, "gold=model", f"gold.name_or_path={user / 'causal'}"],
    ], user, env(user))
    assert bon.returncode == 0, bon.stderr[-3000:]
    curve = pd.read_csv(user / "runs/bon/bon_curve.csv")
    assert curve["n"].tolist() == [1, 2, 4] and curve["gold"].notna().all()
    assert str(missing) in one_line_error(no_prompts)
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    rows = pd.read_json(user / "runs/ppo/metrics.jsonl", lines=True).dropna(subset=["ppo/step"])
    assert rows["ppo/step"].tolist() == [0, 1] and rows["ppo/gold"].notna().all()
    line = one_line_error(bad_gold)
    assert str(user / "causal") in line and "score" in line
    # Item 13: every record and artifact file the CLI wrote is strict JSON (a 2-point Gao fit has
    # non-finite coefficients; they are null, never the Infinity/NaN literals strict parsers refuse).
    def refuse(literal):
        raise AssertionError(f"non-strict JSON literal {literal}")

    written = [*user.glob("runs/*/*.json"), *user.glob("artifacts/*/*/*.json"), *user.glob("artifacts/*/*/*/*.json")]
    assert len(written) > 10
    for path in written:
        json.loads(path.read_text(), parse_constant=refuse)
    for path in user.glob("runs/*/metrics.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line, parse_constant=refuse)

    # A proxy RM whose head is gone from its checkpoint is refused like the causal gold.
    from safetensors.torch import load_file, save_file

    (rm_dir,) = [user / "artifacts/rm" / name for name in built(user / "artifacts", "rm")]
    member = rm_dir / "member_0" / "reward_model.safetensors"
    save_file({k: v for k, v in load_file(str(member)).items() if not k.startswith("head.")}, str(member))
    bad_proxy = cli(["stage=bon", *own(user), *rm, *gold], user, env(user))
    assert str(rm_dir / "member_0") in one_line_error(bad_proxy)


def test_impossible_own_data_configs_fail_at_validation_naming_the_key(user):
    no_gold = one_line_error(cli(["stage=ppo", *own(user)], user, env(user)))
    assert "gold.kind" in no_gold and "gold=model gold.name_or_path=" in no_gold
    tiny = one_line_error(cli(["stage=rm", *own(user), "model@policy=tiny-m"], user, env(user)))
    assert "policy.source" in tiny and "model@policy=local policy.name_or_path=" in tiny


def test_edited_truncated_emptied_or_deleted_data_and_changed_weights_are_never_the_old_result(tmp_path):
    write_lines(tmp_path / "prefs.jsonl", preference_lines(120))
    save_model_dir(tmp_path / "policy", seed=0)
    save_model_dir(tmp_path / "backbone", seed=1)
    args = ["stage=rm", "stage.build_upstream=true", *own(tmp_path), "model@rm=local",
            f"rm.name_or_path={tmp_path / 'backbone'}", "rm_train.loss=bt"]
    store = tmp_path / "artifacts"

    def rerun():
        proc = cli(args, tmp_path, env(tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return built(store, "data"), built(store, "rm")

    data0, rm0 = rerun()
    assert len(data0) == len(rm0) == 1
    lines = (tmp_path / "prefs.jsonl").read_text().splitlines()
    # Edited: the first records' labels flipped (same size, same line count).
    flipped = [json.dumps({**r, "chosen": r["rejected"], "rejected": r["chosen"]})
               for r in map(json.loads, lines[:30])]
    write_lines(tmp_path / "prefs.jsonl", flipped + lines[30:])
    data1, rm1 = rerun()
    assert len(data1) == len(rm1) == 2
    # Truncated: the new data artifact holds what is in the file now.
    write_lines(tmp_path / "prefs.jsonl", lines[:60])
    data2, rm2 = rerun()
    assert len(data2) == len(rm2) == 3
    (new,) = set(data2) - set(data1)
    assert json.loads((store / "data" / new / "stats.json").read_text())["data/records_read"] == 60
    # The RM backbone's weights re-saved: the RM is retrained on the same data.
    save_model_dir(tmp_path / "backbone", seed=2)
    data3, rm3 = rerun()
    assert data3 == data2 and len(rm3) == 4
    # Emptied, then deleted: one-line errors naming the file, and nothing new is built.
    write_lines(tmp_path / "prefs.jsonl", [])
    assert "prefs.jsonl" in one_line_error(cli(args, tmp_path, env(tmp_path)))
    (tmp_path / "prefs.jsonl").unlink()
    assert str(tmp_path / "prefs.jsonl") in one_line_error(cli(args, tmp_path, env(tmp_path)))
    assert built(store, "data") == data3 and built(store, "rm") == rm3


@pytest.mark.parametrize("offline", [True, False])
def test_an_unreachable_hub_model_is_one_line_telling_how_to_use_a_local_directory(tmp_path, offline):
    write_lines(tmp_path / "prefs.jsonl", preference_lines(20))
    # Offline by HF_HUB_OFFLINE, or "online" against a hub endpoint that refuses connections.
    hub = {"HF_HUB_OFFLINE": "1"} if offline else {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = cli(["stage=rm", "task=jsonl", f"task.path={tmp_path / 'prefs.jsonl'}", "model@policy=pythia-14m",
                f"artifacts_dir={tmp_path / 'artifacts'}"], tmp_path,
               {**env(tmp_path), "HF_HOME": str(tmp_path / "hf"), **hub})
    line = one_line_error(proc)
    assert "EleutherAI/pythia-14m-deduped" in line and "policy.name_or_path=" in line and "local" in line.lower()
    assert ("HF_HUB_OFFLINE" in line) == offline


def test_the_build_hint_of_a_missing_artifact_builds_exactly_it(tmp_path):
    """Non-default sft.*, data.*, rm_train.* and rm settings: following the hint, then the original
    command, succeeds (a hint with defaults would build other artifacts and the command still fail)."""
    args = ["stage=bon", "sft.steps=20", "sft.n_demos=64", "sft.lr=0.01", "data.comparison_budget=96",
            "data.n_eval_prompts=8", "data.temperature=0.9", "model@rm=tiny-xs", "rm_train.epochs=1",
            "rm_train.batch_size=8", "rm_train.lr=0.01", "task.n_topics=6", "seed=3", "bon.n_max=4",
            "bon.n_eval_prompts=4", "progress=false", f"artifacts_dir={tmp_path / 'artifacts'}"]
    line = one_line_error(cli(args, tmp_path, env(tmp_path)))
    hint = shlex.split(line.split("build it with: ", 1)[1])
    assert hint[0] == "rlhf-scaling" and "stage=rm" in hint
    built_ = cli(hint[1:], tmp_path, env(tmp_path))
    assert built_.returncode == 0, built_.stderr[-3000:]
    again = cli(args, tmp_path, env(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
