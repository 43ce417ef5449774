"""What every stage recipe sets up the same way: the task's tokenizer and gold reward, the
artifact each stage produces (and the command that builds it), and the run tracker.

Artifact recipes hold exactly what changes the artifact, external inputs by their content, so a
sweep over a later stage's settings reuses the earlier artifacts and an edited input rebuilds them.
"""

from __future__ import annotations

import json
import random
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Callable, List, Optional

from omegaconf import DictConfig, OmegaConf

from rlhf_scaling.artifacts import Artifact, make_artifact
from rlhf_scaling.config import ConfigError
from rlhf_scaling.data.loaders import read_prompts, source_identity
from rlhf_scaling.data import feature_world
from rlhf_scaling.data.synthetic import SyntheticTask, build_tokenizer, make_task, sample_prompts
from rlhf_scaling.gold import FeatureGold, ModelGold, SyntheticGold
from rlhf_scaling.models import load_tokenizer, model_identity, resolve_model, tokenizer_identity


def section(cfg: DictConfig, key: str) -> dict:
    """A config section as a plain dict (for recipes, records and logging)."""
    return OmegaConf.to_container(cfg[key], resolve=True)


@dataclass
class TaskSetup:
    """The tokenizer, the synthetic task (None for loaded data), the gold reward of a job and, for
    loaded data, where its best-of-n / PPO prompts come from."""

    tokenizer: object
    task: Optional[SyntheticTask | feature_world.FeatureTask]
    gold: object  # .score(prompts, responses) -> Tensor (B,); None where the job never scores with gold
    prompt_source: Optional[Callable[[], Path]] = None  # loaded data: the JSONL file of prompts (read once)
    _pool: Optional[List[str]] = field(default=None, repr=False)

    def prompts(self, n: int, seed: int, exclude: AbstractSet[str] = frozenset()) -> List[str]:
        """n prompts from a generator seeded by `seed`: fresh synthetic prompts, or for loaded data
        n distinct prompts of the prompt file (repeated in whole shuffled passes when it has fewer).

        exclude: prompts a held-out set must not hold (those a model trained on), left out in the
        feature world (65,536 prompts: drawn independently, 4-8% of a held-out set were training
        prompts); with none excluded the same draws as without. The topics world's ~240 prompts
        all recur in training (held out there are responses), and loaded data's prompts are its
        held-out split already: there it changes nothing. ValueError when the feature world has no
        prompt left outside `exclude`."""
        rng = random.Random(seed)
        if isinstance(self.task, feature_world.FeatureTask):
            return feature_world.sample_unseen_prompts(self.task, n, rng, exclude)
        if self.task is not None:
            return sample_prompts(self.task, n, rng)
        if self._pool is None:
            self._pool = read_prompts(self.prompt_source())
        drawn: List[str] = []
        while len(drawn) < n:  # whole shuffled passes over the pool: each prompt floor(n/P) times or more
            drawn += rng.sample(self._pool, len(self._pool))
        return drawn[:n]


def _prompt_file(cfg: DictConfig) -> Callable[[], Path]:
    """Loaded data's prompt file: task.prompts_path, or the data artifact's held-out groups (their
    prompts were not trained on), looked up only when prompts are first asked for."""
    if cfg.task.prompts_path:
        return lambda: Path(cfg.task.prompts_path).expanduser()
    return lambda: data_artifact(cfg).require(build_command("data", cfg)) / "eval.jsonl"


def setup_task(cfg: DictConfig, device: str = "cpu") -> TaskSetup:
    """Tokenizer, task and gold from cfg.task, cfg.policy and cfg.gold (validate() has refused the
    combinations that cannot work, naming the key to set)."""
    task = None
    t = cfg.task
    if t.name == "synthetic" and t.world == "features":
        task = feature_world.make_feature_task(
            prompt_vocab=t.prompt_vocab, response_vocab=t.response_vocab, prompt_length=t.prompt_length,
            n_features=t.n_features, zipf_exponent=t.zipf_exponent, natural_length=t.natural_length,
            max_response_tokens=t.max_response_tokens, min_length=t.min_length)
    elif t.name == "synthetic":
        task = make_task(t.n_topics, t.words_per_topic, t.natural_length, t.max_response_tokens)
    if cfg.policy.source == "pretrained":
        tokenizer = load_tokenizer(cfg.policy)
    elif task is not None:
        tokenizer = build_tokenizer(task)
    else:
        raise ConfigError(f"policy.source=tiny needs task.name=synthetic (its tokenizer); "
                          f"task.name={cfg.task.name} needs a pretrained policy and its tokenizer")
    # Loaded data is read, not generated, so its data and RM jobs score nothing with gold.
    needs_gold = task is not None or cfg.stage.name in ("bon", "ppo", "dpo", "study")
    if not needs_gold:
        gold = None
    elif cfg.gold.kind == "synthetic":
        gold = FeatureGold(task) if isinstance(task, feature_world.FeatureTask) else SyntheticGold(task)
    else:
        gold = ModelGold(cfg.gold.name_or_path, batch_size=cfg.gold.batch_size, device=device,
                         trust_remote_code=cfg.gold.trust_remote_code, revision=cfg.gold.revision)
    return TaskSetup(tokenizer, task, gold, None if task is not None else _prompt_file(cfg))


# ----------------------------------------------------------------------------- artifacts
#
# A recipe holds exactly what changes an artifact: external inputs by their content (a data file
# by its hash, a model directory by its files' hashes, a hub id by its commit), never by path, and
# no setting that cannot change the result (checkpoint and eval intervals, batch sizes of scoring).

TINY_SHAPE = ("n_layer", "d_model", "n_head", "max_position")  # what builds a tiny spec's weights
SYNTHETIC_TASK = ("n_topics", "words_per_topic", "natural_length", "max_response_tokens")
FEATURE_WORLD = ("world", "prompt_vocab", "response_vocab", "prompt_length", "n_features", "zipf_exponent",
                 "natural_length", "max_response_tokens")
LOADED_TASK = ("name", "split", "max_prompt_tokens", "on_bad_record")  # what reading task.path depends on
LOADED_DATA = ("n_eval_prompts", "seed")  # the held-out split of loaded data; the rest of data.* generates
RM_TRAIN_NOT_IN_WEIGHTS = ("checkpoint_every", "eval_every")  # when to save / evaluate: same weights


def model_recipe(spec, key: str) -> dict:
    """A model spec's identity: a tiny spec's shape, or pretrained weights' content (models.model_identity).
    key: the spec's config key ("policy", "rm"), named in errors."""
    if spec.source == "tiny":
        return {"source": "tiny", **{k: spec[k] for k in TINY_SHAPE}}
    return {"source": "pretrained", **model_identity(spec.name_or_path, spec.revision, key=f"{key}.name_or_path")}


def task_recipe(cfg: DictConfig) -> dict:
    """The synthetic language's parameters, or the loaded file's content and how it is read."""
    t = cfg.task
    if t.name == "synthetic" and t.world == "features":
        return {"name": "synthetic", **{k: t[k] for k in FEATURE_WORLD}}
    if t.name == "synthetic":  # the topics world: keys as before `world` existed
        return {"name": "synthetic", **{k: t[k] for k in SYNTHETIC_TASK}}
    return {**{k: t[k] for k in LOADED_TASK}, "content": source_identity(t.path)}


def gold_recipe(cfg: DictConfig) -> dict:
    """The gold that labels synthetic data: the task's own rules, or a reward model's content."""
    g = cfg.gold
    if g.kind == "synthetic" and cfg.task.world == "features" and cfg.task.min_length:
        # the brevity term labels data but builds no SFT policy; absent at 0, so older keys still hold
        return {"kind": "synthetic", "min_length": cfg.task.min_length}
    if g.kind == "synthetic":
        return {"kind": "synthetic"}
    return {"kind": "model", **model_identity(g.name_or_path, g.revision, key="gold.name_or_path")}


def sft_artifact(cfg: DictConfig) -> Artifact:
    """The SFT policy: depends on the policy spec, the task and the SFT settings."""
    recipe = {"policy": model_recipe(cfg.policy, "policy"), "task": task_recipe(cfg), "sft": section(cfg, "sft"),
              "seed": cfg.seed}
    return make_artifact(cfg.artifacts_dir, "sft", cfg.policy.name, recipe)


def policy_init_path(cfg: DictConfig) -> str:
    """Where the initial (= reference) policy loads from: the SFT artifact for tiny specs, the given
    pretrained weights (an SFT checkpoint; a hub id at policy.revision) otherwise."""
    if cfg.policy.source == "pretrained":
        return resolve_model(cfg.policy.name_or_path, cfg.policy.revision, key="policy.name_or_path")
    return str(sft_artifact(cfg).require(build_command("sft", cfg)))


def data_artifact(cfg: DictConfig) -> Artifact:
    """Preference data: generated from the init policy and labelled by gold (synthetic), or read
    from task.path with the policy's tokenizer (prompt lengths) and split into train / held out."""
    if cfg.task.name == "synthetic":
        policy_init = sft_artifact(cfg).key if cfg.policy.source == "tiny" else model_recipe(cfg.policy, "policy")
        recipe = {"task": task_recipe(cfg), "data": data_recipe(section(cfg, "data"), cfg.data.n_val_prompts),
                  "gold": gold_recipe(cfg),
                  "policy_init": policy_init, "seed": cfg.seed}
        if cfg.task.world == "features":  # its held-out prompts are drawn among the unseen ones since then
            recipe["held_out_prompts"] = "unseen"
        name = f"{cfg.task.name}-k{cfg.data.responses_per_prompt}"
    else:
        recipe = {"task": task_recipe(cfg), "data": data_recipe({k: cfg.data[k] for k in LOADED_DATA}, cfg.data.n_val_prompts),
                  "tokenizer": tokenizer_identity(cfg.policy.name_or_path, cfg.policy.revision, "policy.name_or_path"),
                  "seed": cfg.seed}
        name = cfg.task.name
    return make_artifact(cfg.artifacts_dir, "data", name, recipe)


def data_recipe(keys: dict, n_val_prompts: int) -> dict:
    """The data section's part of the data key: `keys`, with the validation split's size only when there
    is one (so the keys of every artifact built before data.n_val_prompts existed still hold)."""
    keys = {k: v for k, v in keys.items() if k != "n_val_prompts"}
    return {**keys, "n_val_prompts": n_val_prompts} if n_val_prompts else keys


def proxy_data_cfg(cfg: DictConfig) -> DictConfig:
    """The config whose policy's samples train the proxy RM: `cfg` itself, or (fixed-RM design,
    proxy.trained_on set) a copy with that policy, so runs of every policy size find ONE RM."""
    if cfg.proxy.get("trained_on") is None:
        return cfg
    out = cfg.copy()
    out.policy = cfg.proxy.trained_on
    out.proxy.trained_on = None
    return out


def record_eval_prompts(path: Path, prompts: List[str], resumed: bool = False, is_main: bool = True) -> None:
    """Write a job's evaluation prompts to `path` (its run folder's eval_prompts.json; rank 0 writes);
    a resumed job instead checks them, on every rank, against the ones it started with and refuses
    to go on with others (another version's draw, another proxy's data): its evaluations would be
    of two prompt sets, plotted as one curve."""
    if resumed and path.exists():
        if json.loads(path.read_text()) != list(prompts):
            raise ConfigError(f"{path}: the evaluation prompts this resumed run draws are not the ones it started "
                              "with (a changed version or upstream data?); start a fresh run (another hydra.run.dir)")
        return
    if is_main:
        path.write_text(json.dumps(list(prompts), indent=0))


def rm_artifact(cfg: DictConfig) -> Artifact:
    """A trained proxy RM (or ensemble): depends on the data, the RM spec, its training settings
    and the response length it truncates to; with proxy.trained_on, on that policy's data."""
    cfg = proxy_data_cfg(cfg)
    rm_train = {k: v for k, v in section(cfg, "rm_train").items() if k not in RM_TRAIN_NOT_IN_WEIGHTS}
    if rm_train["early_stop_patience"]:  # where it evaluates decides where it can stop: other weights
        rm_train["eval_every"] = cfg.rm_train.eval_every
    else:  # no early stopping: the same weights (and artifact keys) as before the option existed
        del rm_train["early_stop_patience"], rm_train["early_stop_min_steps"]
    if not rm_train["plateau_lr_decays"]:  # no cut of the lr: its factor is unused, the keys as before
        del rm_train["plateau_lr_decays"], rm_train["plateau_lr_factor"]
    recipe = {"data": data_artifact(cfg).key, "rm": model_recipe(cfg.rm, "rm"), "rm_train": rm_train,
              "max_response_tokens": cfg.task.max_response_tokens, "seed": cfg.seed}
    return make_artifact(cfg.artifacts_dir, "rm", f"{cfg.rm.name}-{cfg.rm_train.loss}", recipe)


# The sections whose values key the SFT policy, the data and the RM (with `seed`): a command that
# repeats them builds the same artifacts.
RECIPE_SECTIONS = ("policy", "rm", "task", "gold", "data", "sft", "rm_train")


def proxy_n_params(rm_dir: Path) -> int:
    """The parameter count of a trained RM artifact's member (rm/n_params as its RM job counted it), so a
    best-of-n or PPO job records its proxy's size itself (the size figures need no RM job beside it)."""
    return int(json.loads((Path(rm_dir) / "metrics.json").read_text())["rm/n_params"])


def build_command(stage: str, cfg: DictConfig) -> str:
    """The command line that builds `stage`'s artifact for this config (for MissingArtifact).

    It runs `stage` with stage.build_upstream=true (so it first builds whatever that stage needs)
    and sets every key of RECIPE_SECTIONS and `seed` whose value differs from a plain
    `rlhf-scaling stage=<stage>`, plus the artifact store: run, it builds exactly the artifact
    this config asks for (tested through the CLI)."""
    default = _default_config(stage)
    parts = ["rlhf-scaling", f"stage={stage}", "stage.build_upstream=true"]
    for name in RECIPE_SECTIONS:
        base = OmegaConf.to_container(default[name], resolve=True)
        for key, value in section(cfg, name).items():
            if key not in base or value != base[key]:
                parts.append(f"{name}.{key}={hydra_value(value)}")
    if cfg.seed != default.seed:
        parts.append(f"seed={cfg.seed}")
    parts.append(f"artifacts_dir={hydra_value(str(Path(cfg.artifacts_dir).resolve()))}")
    return " ".join(shlex.quote(p) for p in parts)


_BARE = re.compile(r"^[A-Za-z_/][\w./+@-]*$")  # no "~": Hydra's parser refuses it unquoted


def hydra_value(value) -> str:
    """A value as Hydra override syntax that parses back to the same value and type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _BARE.match(text) and text.lower() not in ("true", "false", "null", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _default_config(stage: str) -> DictConfig:
    """The config of a plain `rlhf-scaling stage=<stage>`: composed inside the running Hydra app
    when there is one (its search path), else through the CLI's compose."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose

        return compose(config_name="config", overrides=[f"stage={stage}"])
    from rlhf_scaling.cli import compose

    return compose([f"stage={stage}"])


# ----------------------------------------------------------------------------- tracking


def open_tracker(cfg: DictConfig, run_dir: Path, stage: str, name: Optional[str] = None, resume: bool = False):
    """The run's local record (always) and W&B mirror (per cfg.tracking); group = experiment."""
    from rlhf_scaling.tracking import RunTracker

    return RunTracker(
        run_dir, OmegaConf.to_container(cfg, resolve=True), stage=stage, mode=cfg.tracking.mode,
        project=cfg.tracking.project, entity=cfg.tracking.entity,
        group=cfg.tracking.group or cfg.experiment, tags=list(cfg.tracking.tags),
        name=name or Path(run_dir).name, resume=resume,
    )
