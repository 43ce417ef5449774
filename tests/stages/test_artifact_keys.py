"""Artifact keys hash exactly what changes the artifact: for each artifact, keys that must change
its key and keys that must not; external inputs by content (a moved file keeps its key, an edited
one does not); the build command's values parse back to themselves."""

from __future__ import annotations

import json
import shutil

import pytest

from rlhf_scaling.cli import compose
from rlhf_scaling.stages.common import data_artifact, hydra_value, rm_artifact, sft_artifact

from local_inputs import preference_lines, save_model_dir, write_lines

# Slow for `make test-fast` (< 3 min): real runs, or every figure/script drawn; `make test` runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


ARTIFACTS = {"sft": sft_artifact, "data": data_artifact, "rm": rm_artifact}

# Settings of later stages, of scoring and of the run itself: never part of an upstream artifact.
NEVER = ["bon.n_max=8", "ppo.steps=3", "ppo.lr=0.5", "gold.batch_size=8", "tracking=wandb_offline",
         "progress=false", "device=cpu", "experiment=other", "stage.build_upstream=true",
         "policy.n_params=123", "rm.n_params=123", "rm.revision=abc", "policy.trust_remote_code=true"]

SYNTHETIC = {
    "sft": {"must": ["policy.d_model=128", "policy.n_layer=3", "task.n_topics=6", "task.max_response_tokens=12",
                     "sft.lr=0.001", "sft.steps=10", "sft.n_demos=64", "sft.seed=1", "seed=1"],
            "not": NEVER + ["data.comparison_budget=3072", "data.seed=3", "rm_train.lr=0.5", "rm.d_model=128",
                            "task.max_prompt_tokens=9", "task.on_bad_record=filter", "gold.name_or_path=/x"]},
    "data": {"must": ["data.responses_per_prompt=2", "data.comparison_budget=3072", "data.label_noise=0.1",
                      "data.temperature=0.7", "data.seed=1", "data.n_eval_prompts=10", "data.n_val_prompts=4", "sft.steps=10",
                      "policy.d_model=128", "task.n_topics=6", "seed=1"],
             "not": NEVER + ["rm_train.lr=0.5", "rm_train.loss=bt", "rm.d_model=128", "task.max_prompt_tokens=9"]},
    "rm": {"must": ["rm_train.lr=0.0005", "rm_train.epochs=1", "rm_train.loss=bt", "rm_train.ensemble_size=2",
                    "rm_train.padding_free=false", "rm_train.batch_size=8", "rm_train.seed=1", "rm.d_model=128",
                    "task.max_response_tokens=12", "data.seed=1", "data.n_val_prompts=4", "sft.steps=10", "seed=1"],
           "not": NEVER + ["rm_train.checkpoint_every=7", "rm_train.eval_every=7"]},
}


def key(kind, overrides):
    return ARTIFACTS[kind](compose(["stage=rm", *overrides])).key


@pytest.mark.parametrize("world", ["synthetic", "features"])
@pytest.mark.parametrize("kind", ["sft", "data", "rm"])
def test_synthetic_artifact_keys_change_exactly_with_what_builds_them(kind, world):
    """The same table in both worlds, except the knobs of the other world (task.n_topics is a topics knob)."""
    base = key(kind, [f"task={world}"])
    must = [o for o in SYNTHETIC[kind]["must"] if world == "synthetic" or not o.startswith("task.n_topics")]
    changed = [o for o in must if key(kind, [f"task={world}", o]) == base]
    assert not changed, f"{kind}: these overrides change the artifact but not its key: {changed}"
    spurious = [o for o in SYNTHETIC[kind]["not"] if key(kind, [f"task={world}", o]) != base]
    assert not spurious, f"{kind}: these overrides cannot change the artifact but change its key: {spurious}"


# The keys of the topics world's default artifacts as the sixth session built them: an option added
# since (data.n_val_prompts at 0, the feature world's unseen held-out prompts) must leave them as they
# were, or every artifact a user built before is silently rebuilt (and a published run no longer found).
TOPICS_KEYS = {"sft": "tiny-m-540b631cec24", "data": "synthetic-k4-a3b7beb782a0", "rm": "tiny-s-kwise-bfce71851598"}


@pytest.mark.parametrize("kind", ["sft", "data", "rm"])
def test_the_topics_worlds_default_keys_are_the_ones_built_before(kind):
    assert key(kind, ["task=synthetic"]) == TOPICS_KEYS[kind]


def test_feature_world_and_early_stopping_key_what_they_change():
    """Every knob of the feature world keys its artifacts (the topics world's do not); early stopping
    keys the RM, and then so does rm_train.eval_every (where it evaluates is where it can stop), as do
    cuts of the learning rate at its plateaus (rm_train.plateau_lr_decays and, with them, their factor)."""
    world = ["task=features"]
    assert key("sft", world) != key("sft", ["task=synthetic"])
    assert key("sft", world) == key("sft", [])  # the default world
    for o in ["task.n_features=100", "task.zipf_exponent=1.0", "task.prompt_vocab=32", "task.response_vocab=48",
              "task.prompt_length=3", "task.natural_length=6"]:
        assert key("sft", [*world, o]) != key("sft", world), o
    assert key("sft", [*world, "task.n_topics=6"]) == key("sft", world)
    topics = ["task=synthetic"]
    assert key("sft", [*topics, "task.n_features=1000"]) == key("sft", topics)  # the topics world ignores the feature knobs
    # gold's brevity term labels the data (and so the RM), not the SFT policy; at 0 it leaves the older keys
    brevity = [*world, "task.min_length=0"]
    assert key("sft", brevity) == key("sft", world)
    assert key("data", brevity) != key("data", world) and key("rm", brevity) != key("rm", world)
    assert key("data", [*world, "task.min_length=3"]) != key("data", world)
    assert key("data", [*world, "data.n_val_prompts=0"]) == key("data", world)
    stop = ["rm_train.early_stop_patience=2"]
    assert key("rm", stop) != key("rm", [])
    assert key("rm", [*stop, "rm_train.eval_every=7"]) != key("rm", stop)
    assert key("rm", [*stop, "rm_train.early_stop_min_steps=100"]) != key("rm", stop)
    assert key("rm", ["rm_train.early_stop_min_steps=100"]) == key("rm", [])  # no early stopping: no effect
    # cuts of the lr at plateaus key the RM, and then so does their factor; none: the keys as before
    cuts = [*stop, "rm_train.plateau_lr_decays=2"]
    assert key("rm", cuts) != key("rm", stop)
    assert key("rm", [*cuts, "rm_train.plateau_lr_factor=0.5"]) != key("rm", cuts)
    assert key("rm", [*stop, "rm_train.plateau_lr_factor=0.5"]) == key("rm", stop)


@pytest.fixture
def own(tmp_path):
    """A user's preference file and local policy / RM-backbone directories."""
    write_lines(tmp_path / "prefs.jsonl", preference_lines(40))
    save_model_dir(tmp_path / "policy", seed=0)
    save_model_dir(tmp_path / "backbone", seed=1)
    return tmp_path


def own_overrides(root, prefs="prefs.jsonl", policy="policy"):
    return ["task=jsonl", f"task.path={root / prefs}", "task.max_prompt_tokens=8", "task.max_response_tokens=16",
            "model@policy=local", f"policy.name_or_path={root / policy}", "model@rm=local",
            f"rm.name_or_path={root / 'backbone'}", "data.n_eval_prompts=8"]


def test_loaded_data_and_its_rm_are_keyed_by_content_not_path(own):
    base = own_overrides(own)
    data0, rm0 = key("data", base), key("rm", base)
    # Settings that generate synthetic data, and the gold, do not touch loaded data.
    for o in ["data.comparison_budget=3072", "data.responses_per_prompt=2", "data.label_noise=0.2",
              "data.temperature=0.5", "gold=model gold.name_or_path=/not/read", "task.max_response_tokens=8",
              "rm_train.lr=0.5"] + NEVER:
        assert key("data", base + o.split()) == data0, o
    for o in ["task.max_prompt_tokens=6", "task.on_bad_record=filter", "data.n_eval_prompts=4", "data.n_val_prompts=4",
              "data.seed=2", "seed=1"]:
        assert key("data", base + [o]) != data0, o
    assert key("rm", base + ["task.max_response_tokens=8"]) != rm0  # responses are truncated to it
    # The same content elsewhere is the same artifact.
    shutil.copy(own / "prefs.jsonl", own / "moved.jsonl")
    shutil.copytree(own / "policy", own / "policy_copy")
    assert key("data", own_overrides(own, "moved.jsonl", "policy_copy")) == data0
    # An edited file or re-saved weights are not.
    lines = (own / "prefs.jsonl").read_text().splitlines()
    write_lines(own / "prefs.jsonl", lines[:-1])
    data1 = key("data", base)
    assert data1 != data0 and key("rm", base) != rm0
    save_model_dir(own / "backbone", seed=2)  # the RM's backbone weights change: only the RM is rebuilt
    assert key("data", base) == data1 and key("rm", base) != rm0
    save_model_dir(own / "policy", seed=3)  # only the policy's tokenizer reads the file: new weights
    assert key("data", base) == data1       # with the same tokenizer keep the data (and a fixed RM)
    config = own / "policy" / "tokenizer_config.json"  # a tokenizer setting changes: the data is rebuilt
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 7}))
    assert key("data", base) != data1


def test_a_deleted_input_is_an_error_naming_it(own):
    (own / "prefs.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="prefs.jsonl"):
        key("data", own_overrides(own))


@pytest.mark.parametrize("value", [None, True, False, 3, 0.003, 1e-12, "tiny-s", "/a/b c/d.jsonl", "it's",
                                   "123", "true", "null", "a=b,c", [1, 2], "~/data/prefs.jsonl", "/m/~x"])
def test_hydra_value_parses_back_to_the_same_value(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"x={hydra_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)
