"""The typed config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Hydra composes `rlhf_scaling/conf/config.yaml` on top of `Config` (the `schema` entry of its defaults list),
so a misspelt key or a wrongly typed value fails at composition, naming the key. `validate`
then checks the values that a type cannot express (K >= 2, budgets that must divide, ...).
Derived quantities (prompts for a budget, comparisons per prompt) are computed here once.

Where each section is consumed:
  policy, rm, study.rm_models -> rlhf_scaling.models        task -> rlhf_scaling.data.tasks
  gold -> rlhf_scaling.gold      data -> stages/data.py      rm_train -> stages/rm.py
  sft -> stages/sft.py           bon -> stages/bon.py        ppo -> stages/ppo.py
  dpo -> stages/dpo.py           paper -> stages/paper.py
  study -> stages/study.py, stages/paper.py (rm_models)
  tracking -> tracking.py        deepspeed -> distributed.py
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rlhf_scaling.artifacts import MAX_NAME_BYTES, is_plain_name


class ConfigError(ValueError):
    """A config value that composes but cannot run; the message names the key."""


@dataclass
class ModelSpec:
    """A backbone: a tiny random-init GPT-NeoX, or pretrained weights from a hub id / local dir."""

    name: str = MISSING  # short name used in run names, plots and artifact keys ("tiny-s", "pythia-410m")
    source: str = "tiny"  # "tiny" (random init from the shape below) or "pretrained" (name_or_path)
    name_or_path: Optional[str] = None  # Hugging Face id or local directory, for source=pretrained
    n_layer: int = 2  # transformer blocks (tiny only)
    d_model: int = 64  # hidden size (tiny only)
    n_head: int = 2  # attention heads (tiny only)
    max_position: int = 128  # context length in tokens (tiny only)
    n_params: Optional[int] = None  # nominal parameter count for scaling plots; None: counted at build
    revision: Optional[str] = None  # hub branch, tag or commit of a hub id (None: the default branch); artifact keys use the commit it resolves to
    trust_remote_code: bool = False  # run a hub repo's own modelling code; off unless you say so


@dataclass
class TaskConfig:
    """Where prompts and preference data come from."""

    name: str = "synthetic"  # synthetic | jsonl | hh | ultrafeedback
    path: Optional[str] = None  # file or local dataset dir for jsonl/hh/ultrafeedback (keyed by content, not path)
    # best-of-n / PPO prompts for a loaded task: a JSONL file with a "prompt" string per line (a
    # preference file is one); None: the held-out prompts of task.path (data.n_eval_prompts of them)
    prompts_path: Optional[str] = None
    split: str = "train"  # split name for Hugging Face datasets
    # synthetic: which world (docs/world.md). topics: 8 topics, ~240 prompts, a few hand-written gold
    # rules (rlhf_scaling/data/synthetic.py); features: combinatorial prompts and a prompt-conditioned
    # gold of many mean-centred Zipf-weighted features (rlhf_scaling/data/feature_world.py)
    world: str = "topics"
    n_topics: int = 8  # synthetic: number of topics (prompts ask about one)
    words_per_topic: int = 6  # synthetic: distinct on-topic words per topic
    natural_length: int = 6  # synthetic: response length (words) beyond which gold penalises
    prompt_vocab: int = 16  # world=features: distinct prompt words
    response_vocab: int = 16  # world=features: distinct response words
    prompt_length: int = 4  # world=features: words per prompt (prompt_vocab^prompt_length distinct prompts)
    n_features: int = 200  # world=features: gold features (half word pairs, half prompt word x response word)
    zipf_exponent: float = 0.8  # world=features: feature k's weight is k^-zipf_exponent (random sign)
    # world=features: gold subtracts 1.0 per response word short of this (0: none; conf/task/features.yaml
    # sets 2, the demonstrations' shortest, so that a one-word or empty answer is not a free gold 0)
    min_length: int = 0
    max_prompt_tokens: int = 8  # prompts longer than this are bad records
    max_response_tokens: int = 16  # generation budget; responses longer than this are truncated
    on_bad_record: str = "error"  # error: stop at the first bad record, naming it | filter: drop and report counts


@dataclass
class GoldConfig:
    """The stand-in for human judgement that labels comparisons and scores policies."""

    kind: str = "synthetic"  # synthetic (programmatic, rlhf_scaling.gold) | model (sequence-classification RM)
    name_or_path: Optional[str] = None  # hub id or local dir of the gold RM, for kind=model
    batch_size: int = 64  # scoring batch size (responses per forward), for kind=model
    revision: Optional[str] = None  # hub branch, tag or commit when name_or_path is a hub id
    trust_remote_code: bool = False  # run the gold model folder's own modelling code (auto_map); off unless you say so


@dataclass
class DataConfig:
    """Preference-data generation: K responses per prompt, gold labels, optional label noise.

    Diversity at a fixed budget: each prompt with K responses yields C(K,2) comparisons, so
    n_prompts = comparison_budget / C(K,2); the budget must be divisible by C(K,2).
    """

    responses_per_prompt: int = 4  # K: responses sampled per prompt (K-wise groups, C(K,2) pairs each)
    comparison_budget: int = 6144  # total training comparisons = n_prompts x C(K,2)
    n_eval_prompts: int = 128  # held-out prompts (with K responses each) for RM evaluation
    # validation prompts (K responses each, labelled like the training data) for model selection:
    # RM early stopping watches their loss, so rm/val_accuracy (the held-out set above) is not measured
    # on the set the weights were chosen on; 0: none (early stopping then watches the held-out set)
    n_val_prompts: int = 0
    label_noise: float = 0.0  # probability that a comparison's label is flipped
    temperature: float = 1.0  # sampling temperature of the policy that writes the responses
    seed: int = 0  # seed of prompt sampling, generation and label noise


@dataclass
class SFTConfig:
    """Policy initialisation by supervised training on demonstrations."""

    n_demos: int = 4096  # demonstrations (prompt, response) drawn from the task
    steps: int = 800  # optimizer steps
    batch_size: int = 32  # sequences per step
    lr: float = 3e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay of SFT
    warmup_ratio: float = 0.05  # fraction of steps of linear warm-up
    lr_schedule: str = "cosine"  # cosine | linear | constant
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    seed: int = 0  # SFT's seed (added to the global `seed`): demonstrations, init weights, batch order; changes the SFT policy


@dataclass
class RMTrainConfig:
    """Reward-model training on gold-labelled comparisons."""

    loss: str = "kwise"  # bt (pairwise) | kwise (all C(K,2) pairs, one forward per response) | margin (Llama 2)
    epochs: int = 4  # passes over the training comparisons
    batch_size: int = 16  # prompts (kwise) or pairs (bt, margin) per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay of RM training
    warmup_ratio: float = 0.05  # fraction of RM optimiser steps of linear LR warm-up
    lr_schedule: str = "cosine"  # cosine | linear | constant
    max_grad_norm: float = 1.0  # gradient clipping (L2 norm); 0 disables
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    ensemble_size: int = 1  # M independently seeded RMs (Coste et al. 2023)
    eval_every: int = 50  # optimizer steps between held-out evaluations
    # early stopping: stop after this many evaluations in a row without a new lowest loss on the
    # validation split (data.n_val_prompts; rm/selection_loss) and keep the weights of the best one
    # (rm/best_step, rm/stopped_step are logged), so RMs of every size are trained to convergence rather
    # than for one fixed length; 0: run all epochs and keep the last weights. Without a validation split
    # it watches rm/val_loss, the held-out set accuracy is reported on (optimistic by the selection; warned).
    early_stop_patience: int = 0
    # early stopping never stops before this many optimizer steps (the best weights are still kept):
    # a plateau at the peak learning rate stopped a 100k-parameter RM at 240 of 936 steps (docs/world.md)
    early_stop_min_steps: int = 0
    # with early stopping: at each of the first this-many plateaus (early_stop_patience evaluations without
    # a new lowest loss, after early_stop_min_steps) multiply the learning rate by plateau_lr_factor and go on
    # instead of stopping; the next plateau after the last cut stops. At a constant peak lr the first
    # plateau stopped RMs under-fitted and at a noisy moment (a tiny-xs RM at 0.73 on 122,880 comparisons,
    # 0.80 on 30,720; docs/world.md, ninth session); 0: stop at the first plateau
    plateau_lr_decays: int = 0
    plateau_lr_factor: float = 0.3  # the learning rate's multiplier at each of plateau_lr_decays' cuts, in (0, 1)
    checkpoint_every: int = 100  # optimizer steps between resumable checkpoints
    margin_scale: float = 1.0  # margin loss: m = margin_scale x the pair's margin (the data's, else |gold_w - gold_l|)
    padding_free: bool = True  # pack each batch's responses end to end in training and eval forwards (rlhf_scaling/packing.py)
    seed: int = 0  # RM training's seed (added to the global `seed`; member m adds 1000·m): head init, batch order; varies RMs on the same data


@dataclass
class ProxyConfig:
    """How the proxy RM's ensemble members (rm_train.ensemble_size) combine into one score, for
    best-of-n and PPO alike (Coste et al. 2023); not part of the RM artifact: the members are the same."""

    ensemble: str = "mean"  # mean | min (worst case) | uwo (mean - uwo_lambda * population variance)
    uwo_lambda: float = 1.0  # uncertainty penalty of uwo
    # fixed-RM design (Hou et al. 2024): the policy whose samples trained the proxy RM, e.g.
    # `+model@proxy.trained_on=tiny-m`, so policies of every size optimise ONE RM; null: the run's own policy
    trained_on: Optional[ModelSpec] = None


@dataclass
class BoNConfig:
    """Best-of-n against a proxy RM, scored by the gold reward with the unbiased estimator."""

    n_max: int = 256  # N: pool of responses per evaluation prompt
    n_eval_prompts: int = 64  # evaluation prompts
    n_grid: List[int] = field(default_factory=list)  # n values; empty: powers of two up to n_max, and n_max
    temperature: float = 1.0  # sampling temperature of the best-of-n pool
    padding_free: bool = True  # the proxy RMs score the pool packed end to end (rlhf_scaling/packing.py)
    seed: int = 0  # best-of-n's seed (added to the global `seed`): its held-out prompts and the sampled pool


@dataclass
class PPOConfig:
    """PPO against a proxy RM with a per-token KL penalty to the frozen reference policy."""

    # ppo: clipped PPO with a critic and GAE, KL as a per-token reward penalty;
    # rloo: REINFORCE leave-one-out (Ahmadian et al. 2024), no critic, advantage = reward − mean of the
    # prompt's other samples_per_prompt − 1 rollouts, KL (ppo.kl_estimator) as a sequence reward penalty;
    # grpo: group-normalised advantages (Shao et al. 2024), no critic, KL as a k3 loss term (x kl_coef).
    # rloo and grpo need samples_per_prompt >= 2; critic, vf_coef, gamma, lam, clip_range_value are PPO's only.
    algorithm: str = "ppo"
    steps: int = 150  # PPO iterations (rollout + update)
    prompts_per_step: int = 32  # distinct prompts per iteration
    samples_per_prompt: int = 2  # rollouts per prompt per iteration
    ppo_epochs: int = 2  # passes over each rollout batch
    minibatch_size: int = 32  # rollouts per gradient step
    lr: float = 1e-4  # policy and value learning rate (Adam)
    kl_coef: float = 0.01  # beta: per-token KL penalty coefficient (initial value when adaptive)
    adaptive_kl: bool = False  # Ziegler et al. 2019 proportional controller on beta
    target_kl: float = 4.0  # nats per sequence, for the adaptive controller
    kl_horizon: int = 10000  # controller horizon in rollouts
    kl_estimator: str = "k1"  # k1 (log ratio, used for the penalty and logged) | k3 (non-negative)
    gamma: float = 1.0  # GAE discount over response tokens (1.0: no discounting, as in RLHF practice)
    lam: float = 0.95  # GAE lambda
    clip_range: float = 0.2  # PPO ratio clip ε of the policy loss
    clip_range_value: float = 0.2  # clip of the value prediction around its old value (value loss)
    vf_coef: float = 0.5  # weight of the value loss in PPO's loss
    max_grad_norm: float = 1.0  # gradient clipping (L2 norm) of PPO's update; 0 disables
    whiten_rewards: bool = False  # scale RM scores to unit std over the batch (mean kept) before adding the KL penalty
    temperature: float = 1.0  # sampling temperature of PPO rollouts
    # separate: the critic is its own transformer + a value head, initialised from the init policy;
    # shared: a value head on the policy's trunk, one forward and backward per minibatch and half the
    # trained parameters, but the value loss (x vf_coef) then also trains the policy's transformer.
    critic: str = "separate"
    padding_free: bool = True  # pack rollouts end to end in every PPO forward, proxy scoring included (no compute on padding; rlhf_scaling/packing.py)
    log_every: int = 1  # iterations between logged metrics
    # held-out evaluation (eval/*, the points the summary fits): one response per prompt of a fixed set
    # of this many prompts (drawn once, seed apart from the rollouts'), sampled with the same seed each
    # time and scored by gold and proxy with the trained KL estimator; 0 = none (fits use batch means)
    eval_prompts: int = 64
    eval_every: int = 10  # iterations between held-out evaluations (also at iteration 0 and at the end)
    checkpoint_every: int = 20  # iterations between resumable checkpoints
    seed: int = 0  # PPO's seed (added to the global `seed`): rollout prompts, sampling, minibatch order


@dataclass
class DPOConfig:
    """Direct alignment on the proxy RMs' preference data (the data artifact), no RM: DPO
    (Rafailov et al. 2023) or IPO (Azar et al. 2023), policy and frozen reference both the SFT policy."""

    # dpo: −log σ(β·h), h = (log π − log π_ref)(chosen) − (same)(rejected), log-probs summed over the
    # response; ipo: (h − 1/(2β))² with each response's log-ratio averaged over its tokens (as TRL does)
    loss: str = "dpo"
    beta: float = 0.1  # β: the KL strength (larger: the policy stays closer to the reference); scales the implicit reward β·log(π/π_ref)
    epochs: int = 4  # passes over the training comparisons
    batch_size: int = 16  # prompts per optimizer step, each with all its labelled pairs (C(K,2) for K-wise data)
    # peak learning rate (AdamW); at 1e-4 (2 epochs) the tiny default policy's KL stayed under 0.6 nats and gold
    # only rose; 1e-3 x 4 epochs went to ~7 nats, past the gold peak (the topics world, then the default, 2026-12-02)
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW weight decay of DPO
    warmup_ratio: float = 0.05  # fraction of DPO's optimizer steps of linear LR warm-up
    lr_schedule: str = "constant"  # cosine | linear | constant
    max_grad_norm: float = 1.0  # gradient clipping (L2 norm) of DPO's update; 0 disables
    padding_free: bool = True  # pack each batch's sequences end to end in every DPO forward (rlhf_scaling/packing.py)
    # held-out evaluation (eval/*, as PPO's): one response per prompt of a fixed set of this many prompts,
    # sampled with the same seed each time, scored by gold, its implicit reward (eval/proxy) and KL to the
    # reference (k1, nats per sequence); the same prompts and seed as PPO's when dpo.seed = ppo.seed; 0 = none
    eval_prompts: int = 64
    eval_every: int = 16  # optimizer steps between held-out evaluations (also at step 0 and at the end)
    checkpoint_every: int = 32  # optimizer steps between resumable checkpoints
    seed: int = 0  # DPO's seed (added to the global `seed`): batch order, held-out prompts and their sampling


@dataclass
class StudyConfig:
    """The embedded default: SFT -> data -> proxy RMs of several sizes -> BoN and PPO -> fits, figures."""

    rm_models: Dict[str, ModelSpec] = field(default_factory=dict)  # proxy RM sizes to compare
    run_bon: bool = True  # the study runs best-of-n against each proxy RM
    run_ppo: bool = True  # the study runs PPO against each proxy RM


@dataclass
class PaperConfig:
    """The paper study (`rlhf-scaling -m +sweep=paper`, stages/paper.py): one job per (sweep, replicate)
    runs a miniature version of that sweep; the claims and figures are computed from all of them."""

    sweep: str = "overoptimization"  # overoptimization | data_size | diversity | policy_size | samples_per_prompt
    comparison_budgets: List[int] = field(default_factory=lambda: [1536, 3072, 6144])  # data_size: RM comparisons (RM `rm`)
    responses_per_prompt: List[int] = field(default_factory=lambda: [2, 4, 8])  # diversity: K at diversity_budget
    diversity_budget: int = 4200  # diversity: the fixed comparison budget (divisible by C(K,2) of every K)
    policy_models: Dict[str, ModelSpec] = field(default_factory=dict)  # policy_size: policies, PPO against ONE RM trained on `policy`'s samples
    samples_per_prompt: List[int] = field(default_factory=lambda: [1, 2, 4])  # samples_per_prompt: PPO rollouts per prompt


@dataclass
class StageConfig:
    name: str = "study"  # sft | data | rm | bon | ppo | dpo | study | paper
    build_upstream: bool = False  # build missing upstream artifacts (SFT, data, RM) first instead of failing; sweeps set it
    skip_completed: bool = True  # a run folder that records a completed run of this same config is not run again


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO profile; batch sizes, accumulation and clipping come from the stage config."""

    enabled: bool = False  # train through a DeepSpeed engine (set by the deepspeed=zero2|zero3|zero3_offload groups)
    zero_stage: int = 0  # 0 (off), 2 or 3
    offload_optimizer: bool = False  # ZeRO optimizer-state offload to CPU memory
    offload_param: bool = False  # ZeRO-3 parameter offload to CPU memory
    bf16: bool = False  # train in bfloat16 mixed precision (GPU; set false on CPU ranks)


@dataclass
class SlurmConfig:
    """Cluster profile the submitit Slurm launcher reads (rlhf_scaling/conf/hydra/launcher/slurm.yaml interpolates it)."""

    partition: Optional[str] = None  # Slurm partition (sbatch --partition); null: the cluster's default
    account: Optional[str] = None  # Slurm account to charge (sbatch --account)
    qos: Optional[str] = None  # Slurm quality of service (sbatch --qos)
    constraint: Optional[str] = None  # node features, e.g. "a100|h100"
    nodes: int = 1  # nodes per job (each runs tasks_per_node ranks)
    tasks_per_node: int = 1  # ranks per node of ONE job (one per GPU for DeepSpeed), not sweep points
    gpus_per_node: Optional[int] = None  # GPUs per node of a job; null on CPU clusters
    cpus_per_task: int = 2  # CPU cores per rank
    mem_gb: Optional[int] = 8  # per node
    timeout_min: int = 60  # a job's time limit in minutes; it checkpoints and requeues before it (signal_delay_s)
    array_parallelism: int = 64  # array jobs running at once
    max_num_timeout: int = 3  # requeues after the time limit; preemptions requeue regardless (rlhf_scaling/preemption.py)
    setup: List[str] = field(default_factory=list)  # shell lines before srun


@dataclass
class TrackingConfig:
    """Weights & Biases mirror of the local run record (which is always written)."""

    mode: str = "disabled"  # disabled | offline | online
    project: str = "rlhf-scaling"  # W&B project
    entity: Optional[str] = None  # W&B entity (team or user); null: your default
    group: Optional[str] = None  # the sweep or study; None: the experiment name
    tags: List[str] = field(default_factory=list)  # W&B tags of every run of this config


@dataclass
class Config:
    """Everything one job needs. See rlhf_scaling/conf/config.yaml for the defaults list."""

    policy: ModelSpec = field(default_factory=ModelSpec)
    rm: ModelSpec = field(default_factory=ModelSpec)
    task: TaskConfig = field(default_factory=TaskConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm_train: RMTrainConfig = field(default_factory=RMTrainConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    bon: BoNConfig = field(default_factory=BoNConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    experiment: str = "default"  # names the W&B group and the run folder
    seed: int = 0  # global seed: added to every stage's own seed and part of every artifact key, so changing it rebuilds the SFT policy, data and RMs (vary a stage's seed, e.g. rm_train.seed, for replicates of that stage alone)
    # replicate index of a sweep point (0, 1, ...): each sweep sets the seeds that should vary between its
    # replicates to ${replicate} (README "Seeds"), so `replicate=range(3)` on a multirun runs 3 seeds of every
    # point and shares the upstream artifacts those seeds do not key; the analysis averages over it as a seed
    replicate: int = 0
    artifacts_dir: str = "artifacts"  # shared, content-addressed store of SFT policies, data and RMs
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True  # progress bars on long loops


def register_configs() -> None:
    """Register the schema so `rlhf_scaling/conf/config.yaml` can name it as `schema` in its defaults."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)


# ----------------------------------------------------------------------------- derived quantities


def pairs_per_prompt(k: int) -> int:
    """C(K, 2): comparisons one prompt with K ranked responses yields."""
    return k * (k - 1) // 2


def n_train_prompts(data: DataConfig) -> int:
    """Prompts needed so that n_prompts x C(K,2) equals the comparison budget."""
    return data.comparison_budget // pairs_per_prompt(data.responses_per_prompt)


def bon_grid(bon: BoNConfig) -> List[int]:
    """The n values best-of-n is evaluated at, ascending and unique."""
    if bon.n_grid:
        return sorted(set(int(n) for n in bon.n_grid))
    grid = [2**i for i in range(int(math.log2(bon.n_max)) + 1)]
    return sorted(set(grid + [bon.n_max]))


# ----------------------------------------------------------------------------- validation

_CHOICES = {
    "policy.source": ("tiny", "pretrained"),
    "rm.source": ("tiny", "pretrained"),
    "task.name": ("synthetic", "jsonl", "hh", "ultrafeedback"),
    "task.world": ("topics", "features"),
    "task.on_bad_record": ("error", "filter"),
    "gold.kind": ("synthetic", "model"),
    "sft.lr_schedule": ("cosine", "linear", "constant"),
    "sft.precision": ("fp32", "bf16"),
    "rm_train.loss": ("bt", "kwise", "margin"),
    "rm_train.lr_schedule": ("cosine", "linear", "constant"),
    "rm_train.precision": ("fp32", "bf16"),
    "proxy.ensemble": ("mean", "min", "uwo"),
    "ppo.kl_estimator": ("k1", "k3"),
    "ppo.critic": ("separate", "shared"),
    "ppo.algorithm": ("ppo", "rloo", "grpo"),
    "dpo.loss": ("dpo", "ipo"),
    "dpo.lr_schedule": ("cosine", "linear", "constant"),
    "stage.name": ("sft", "data", "rm", "bon", "ppo", "dpo", "study", "paper"),
    "paper.sweep": ("overoptimization", "data_size", "diversity", "policy_size", "samples_per_prompt"),
    "deepspeed.zero_stage": (0, 2, 3),
    "tracking.mode": ("disabled", "offline", "online"),
    "device": ("auto", "cpu", "cuda"),
}

_POSITIVE = [
    "data.comparison_budget", "data.n_eval_prompts", "data.temperature",
    "sft.n_demos", "sft.steps", "sft.batch_size", "sft.lr",
    "rm_train.epochs", "rm_train.batch_size", "rm_train.grad_accum", "rm_train.lr",
    "rm_train.ensemble_size", "rm_train.eval_every", "rm_train.checkpoint_every",
    "bon.n_max", "bon.n_eval_prompts", "bon.temperature",
    "ppo.steps", "ppo.prompts_per_step", "ppo.samples_per_prompt", "ppo.ppo_epochs",
    "ppo.minibatch_size", "ppo.lr", "ppo.temperature", "ppo.log_every", "ppo.checkpoint_every",
    "ppo.eval_every",
    "dpo.beta", "dpo.epochs", "dpo.batch_size", "dpo.lr", "dpo.eval_every", "dpo.checkpoint_every",
    "task.n_topics", "task.words_per_topic", "task.natural_length",
    "task.max_prompt_tokens", "task.max_response_tokens",
    "task.prompt_vocab", "task.response_vocab", "task.prompt_length", "task.n_features", "task.zipf_exponent",
]

_NON_NEGATIVE = [
    "task.min_length", "data.n_val_prompts",
    "sft.weight_decay", "rm_train.weight_decay", "rm_train.early_stop_patience", "rm_train.early_stop_min_steps", "rm_train.plateau_lr_decays", "rm_train.max_grad_norm", "rm_train.margin_scale",
    "ppo.kl_coef", "ppo.max_grad_norm", "ppo.vf_coef", "proxy.uwo_lambda", "ppo.eval_prompts",
    "dpo.weight_decay", "dpo.max_grad_norm", "dpo.eval_prompts", "replicate",
]

_UNIT_INTERVAL = ["sft.warmup_ratio", "rm_train.warmup_ratio", "ppo.gamma", "ppo.lam", "ppo.clip_range",
                  "dpo.warmup_ratio"]


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _check_name(key: str, name: str) -> None:
    """Names become folder names (artifacts, study sub-runs): one plain path component only, so a
    config can never write outside the artifact store or the run folder."""
    if not is_plain_name(name):  # the artifact store's own rule, checked before any work
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise ConfigError(f"{key}: {shown!r} must be a plain name of at most {MAX_NAME_BYTES} bytes "
                          f"(no '/', '\\', '..', '~'); it names folders")


def _plain(cfg) -> dict:
    """The config as plain containers (a DictConfig resolved, or a Config dataclass), without the
    `hydra` node a resolver's root carries."""
    if dataclasses.is_dataclass(cfg):
        tree = dataclasses.asdict(cfg)
    else:
        from omegaconf import OmegaConf

        tree = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg if k != "hydra"}
    return tree


def non_finite_keys(tree, prefix: str = "") -> List[tuple]:
    """(dotted key, value) of every float in a nested dict/list that is NaN or infinite."""
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [(prefix, tree)]
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    return [k for key, value in items for k in non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key))]


def _check_model(key: str, spec: ModelSpec) -> None:
    _check_name(f"{key}.name", spec.name)
    if spec.source == "pretrained" and not spec.name_or_path:
        raise ConfigError(f"{key}.name_or_path: required when {key}.source=pretrained")
    if spec.source == "tiny":
        for dim in ("n_layer", "d_model", "n_head", "max_position"):
            if getattr(spec, dim) <= 0:
                raise ConfigError(f"{key}.{dim}: must be > 0, got {getattr(spec, dim)}")
        if spec.d_model % spec.n_head:
            raise ConfigError(f"{key}.d_model: {spec.d_model} is not divisible by {key}.n_head={spec.n_head}")


def validate(cfg) -> None:
    """Check values a type cannot; raise ConfigError naming the first offending key.

    `cfg` is the composed Config (a DictConfig typed by the schema, or a Config instance).
    """
    _check_ranges(cfg)
    _check_names(cfg)
    _check_data(cfg)
    _check_stages(cfg)


def _check_ranges(cfg) -> None:
    """Per-key value checks: finite floats, choices, signs and unit intervals."""
    # Every float field: "inf" and "nan" parse as floats, and no setting means them.
    for key, value in non_finite_keys(_plain(cfg)):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
    for key in _POSITIVE:
        value = _get(cfg, key)
        if not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    for key in _NON_NEGATIVE:
        value = _get(cfg, key)
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    for key in _UNIT_INTERVAL:
        value = _get(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}: must be in [0, 1], got {value}")


def _check_names(cfg) -> None:
    """Model specs, and every name that becomes a folder."""
    _check_model("policy", cfg.policy)
    _check_model("rm", cfg.rm)
    for name, spec in cfg.study.rm_models.items():
        _check_name(f"study.rm_models.{name} (its key names the study's sub-run folders)", name)
        _check_model(f"study.rm_models.{name}", spec)
    _check_name("experiment", cfg.experiment)


def _check_data(cfg) -> None:
    """The preference data's shape, the task and the gold that labels or scores it."""
    k = cfg.data.responses_per_prompt
    if k < 2:
        raise ConfigError(f"data.responses_per_prompt: must be >= 2 (a comparison needs two responses), got {k}")
    if cfg.data.comparison_budget % pairs_per_prompt(k):
        raise ConfigError(
            f"data.comparison_budget: {cfg.data.comparison_budget} is not divisible by C(K,2)={pairs_per_prompt(k)} "
            f"for data.responses_per_prompt={k}"
        )
    if not 0.0 <= cfg.data.label_noise < 0.5:
        raise ConfigError(f"data.label_noise: must be in [0, 0.5), got {cfg.data.label_noise}")
    if cfg.rm_train.loss == "kwise" and n_train_prompts(cfg.data) < cfg.rm_train.batch_size:
        raise ConfigError(
            f"rm_train.batch_size: {cfg.rm_train.batch_size} prompts per batch exceeds the "
            f"{n_train_prompts(cfg.data)} training prompts of data.comparison_budget"
        )
    t = cfg.task
    if t.world == "features" and t.n_features // 2 > min(t.response_vocab * (t.response_vocab - 1) // 2,
                                                         t.prompt_vocab * t.response_vocab - t.n_features % 2):
        raise ConfigError(f"task.n_features: {t.n_features} features need more word pairs than task.response_vocab="
                          f"{t.response_vocab} and task.prompt_vocab={t.prompt_vocab} give (half are pairs of response "
                          f"words, half prompt word x response word)")
    if t.world == "features" and t.prompt_length > t.max_prompt_tokens:
        raise ConfigError(f"task.prompt_length: {t.prompt_length} words exceed task.max_prompt_tokens={t.max_prompt_tokens}")
    if t.min_length and not (t.name == "synthetic" and t.world == "features"):
        raise ConfigError(f"task.min_length: {t.min_length} has no effect outside the feature world "
                          f"(task=features); leave it 0")
    if t.world == "features" and t.min_length > t.natural_length:
        raise ConfigError(f"task.min_length: {t.min_length} exceeds task.natural_length={t.natural_length} (gold "
                          f"would penalise every length)")
    if cfg.gold.kind == "model" and not cfg.gold.name_or_path:
        raise ConfigError("gold.name_or_path: required when gold.kind=model")
    if cfg.task.name != "synthetic" and not cfg.task.path:
        raise ConfigError(f"task.path: required for task.name={cfg.task.name}")
    _check_own_data(cfg)


def _check_stages(cfg) -> None:
    """Settings of best-of-n, PPO, DeepSpeed and the study that only make sense together."""
    if any(n < 1 or n > cfg.bon.n_max for n in cfg.bon.n_grid):
        raise ConfigError(f"bon.n_grid: every n must be in [1, bon.n_max={cfg.bon.n_max}], got {list(cfg.bon.n_grid)}")
    if cfg.ppo.minibatch_size > cfg.ppo.prompts_per_step * cfg.ppo.samples_per_prompt:
        raise ConfigError(
            f"ppo.minibatch_size: {cfg.ppo.minibatch_size} exceeds the rollouts per step "
            f"(ppo.prompts_per_step x ppo.samples_per_prompt = {cfg.ppo.prompts_per_step * cfg.ppo.samples_per_prompt})"
        )
    if cfg.ppo.algorithm in ("rloo", "grpo") and cfg.ppo.samples_per_prompt < 2:
        raise ConfigError(f"ppo.samples_per_prompt: ppo.algorithm={cfg.ppo.algorithm} compares the rollouts of a prompt "
                          f"with each other and needs >= 2, got {cfg.ppo.samples_per_prompt}")
    if cfg.ppo.algorithm == "grpo" and cfg.ppo.kl_estimator != "k3":
        raise ConfigError(f"ppo.kl_estimator: ppo.algorithm=grpo puts the KL in the loss, where only k3 has a useful "
                          f"gradient; set ppo.kl_estimator=k3 (method=grpo does), got {cfg.ppo.kl_estimator}")
    t = cfg.rm_train
    if not 0.0 < t.plateau_lr_factor < 1.0:
        raise ConfigError(f"rm_train.plateau_lr_factor: must be in (0, 1) (a cut of the learning rate), got {t.plateau_lr_factor}")
    if t.plateau_lr_decays and not t.early_stop_patience:
        raise ConfigError(f"rm_train.plateau_lr_decays: {t.plateau_lr_decays} cuts of the learning rate happen at the plateaus "
                          "early stopping detects; set rm_train.early_stop_patience > 0 too")
    if cfg.deepspeed.enabled and cfg.deepspeed.zero_stage not in (2, 3):
        raise ConfigError(f"deepspeed.zero_stage: must be 2 or 3 when deepspeed.enabled, got {cfg.deepspeed.zero_stage}")
    if cfg.stage.name == "study" and not cfg.study.rm_models:
        raise ConfigError("study.rm_models: the study needs at least one proxy RM size")
    if cfg.proxy.trained_on is not None and cfg.stage.name in ("sft", "data", "rm"):
        raise ConfigError(f"proxy.trained_on: names the RM a best-of-n or PPO run uses; stage={cfg.stage.name} "
                          "builds with its own policy (set policy instead)")
    if cfg.stage.name == "paper":
        _check_paper(cfg)


def _check_paper(cfg) -> None:
    """The paper study's grids: a fixed budget every K divides, and non-empty model sets."""
    p = cfg.paper
    for k in p.responses_per_prompt:
        if k < 2 or p.diversity_budget % pairs_per_prompt(k):
            raise ConfigError(f"paper.diversity_budget: {p.diversity_budget} is not divisible by C(K,2)="
                              f"{pairs_per_prompt(k)} for K={k} of paper.responses_per_prompt")
    if any(b <= 0 or b % pairs_per_prompt(cfg.data.responses_per_prompt) for b in p.comparison_budgets):
        raise ConfigError(f"paper.comparison_budgets: each must be > 0 and divisible by C(K,2) for "
                          f"data.responses_per_prompt={cfg.data.responses_per_prompt}, got {list(p.comparison_budgets)}")
    if any(n < 1 for n in p.samples_per_prompt):
        raise ConfigError(f"paper.samples_per_prompt: each must be >= 1, got {list(p.samples_per_prompt)}")
    for key, models in (("study.rm_models", cfg.study.rm_models), ("paper.policy_models", p.policy_models)):
        if not models:
            raise ConfigError(f"{key}: the paper study needs at least one model here")
        for name, spec in models.items():
            _check_model(f"{key}.{name}", spec)


_LOCAL_MODEL_HINT = "a directory written by save_pretrained (README: 'A local model directory') or a hub id"


def _check_own_data(cfg) -> None:
    """Loaded preference data (task.name != synthetic) brings text but no language of ours: the
    policy must bring a tokenizer, and best-of-n / PPO need a gold that can score any text."""
    loaded = cfg.task.name != "synthetic"
    if loaded and cfg.policy.source == "tiny":
        raise ConfigError(
            f"policy.source: a tiny random-init policy knows only the synthetic task's words, not task.name={cfg.task.name}; "
            f"set model@policy=local policy.name_or_path=<{_LOCAL_MODEL_HINT}>")
    if loaded and cfg.gold.kind == "synthetic" and cfg.stage.name in ("bon", "ppo", "dpo", "study"):
        raise ConfigError(
            f"gold.kind: the synthetic gold scores only the synthetic task, but stage={cfg.stage.name} scores "
            f"task.name={cfg.task.name} responses with gold; set gold=model gold.name_or_path=<a sequence-"
            f"classification reward model: {_LOCAL_MODEL_HINT}>")
    if cfg.task.prompts_path and not loaded:
        raise ConfigError("task.prompts_path: the synthetic task makes its own prompts; set it only with "
                          "task=jsonl|hh|ultrafeedback (or drop it)")
