"""Policies (causal LMs) and reward models built from a ModelSpec; safetensors checkpoints.

A spec is either a tiny random-init GPT-NeoX (the Pythia architecture, so CPU studies and the
Pythia suite share one code path) or pretrained weights from a hub id or a local directory.

Reward model = backbone + scalar linear head read at the LAST REAL (non-padding) token,
found from the attention mask so left and right padding both work (peer bug: reading the
reward at a PAD after EOS, TRL #3750, #2778).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    GPTNeoXModel,
    PreTrainedModel,
)

from rlhf_scaling.packing import packed_hidden_states, plan_packing, position_ids_from_mask
from rlhf_scaling.tracking import strict_json

REWARD_MODEL_FILE = "reward_model.safetensors"
REWARD_META_FILE = "reward_model.json"


def tiny_config(spec, vocab_size: int, pad_token_id: int, eos_token_id: int) -> GPTNeoXConfig:
    """GPT-NeoX config of a tiny spec; BOS/EOS/PAD inside the vocab (transformers 5 warns otherwise)."""
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=spec.d_model,
        num_hidden_layers=spec.n_layer,
        num_attention_heads=spec.n_head,
        intermediate_size=4 * spec.d_model,
        max_position_embeddings=spec.max_position,
        rotary_pct=0.25,
        use_parallel_residual=True,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


def _check_local_path(name_or_path: str) -> None:
    """A path-looking name that does not exist is a user error, not a hub id to try."""
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).expanduser().is_dir():
        raise FileNotFoundError(f"model path does not exist or is not a directory: {name_or_path}")


class ModelUnavailable(FileNotFoundError):
    """A hub id that neither the local hub cache nor the hub can give (offline, no network, no such
    repo or revision); one line naming the model and how to point at a local directory instead."""


# What the loaders read from a hub repo: configs, tokenizers, safetensors weights, remote code.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py"]


def _hub_snapshot(repo_id: str, revision: Optional[str], patterns, key: str) -> str:
    """The local snapshot folder (named by its commit) of repo_id at `revision`, fetching the files
    matching `patterns` if they are not cached. HF_HUB_OFFLINE=1 reads the cache only; without it
    the hub is asked once (one request, no per-file retries) and a failed request falls back to the
    cache; anything else is ModelUnavailable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns), etag_timeout=5)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        cause = err.__cause__ or err  # snapshot_download wraps the network error it fell back from
        why = "HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline else \
            f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:160]}"
        raise ModelUnavailable(
            f"model {repo_id!r}{'' if revision is None else f' (revision {revision})'} is not a local directory and "
            f"cannot be had from the Hugging Face hub ({why}); save it to a directory (README: 'A local model "
            f"directory') and set {key}=/path/to/that/dir") from None


def resolve_model(name_or_path: str, revision: Optional[str] = None, key: str = "name_or_path") -> str:
    """The local directory a pretrained spec loads from: a local directory as it is, a hub id as
    its cached snapshot at `revision` (None: the default branch), downloaded on first use.

    Every loader goes through here, so `revision` and HF_HUB_OFFLINE hold everywhere and an
    unreachable hub is one line (ModelUnavailable) instead of retries and a traceback.
    key: the config key to name in errors (e.g. "policy.name_or_path")."""
    _check_local_path(name_or_path)
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return str(local)
    return _hub_snapshot(name_or_path, revision, HUB_FILES, key)


def model_identity(name_or_path: str, revision: Optional[str] = None, key: str = "name_or_path") -> dict:
    """What identifies a pretrained model's content, for artifact keys: a local directory by the
    hashes of its files (fingerprint.py; config, tokenizer and weights), a hub id by the commit
    its revision resolves to (only config.json is fetched to learn it)."""
    from rlhf_scaling.fingerprint import directory_digest

    _check_local_path(name_or_path)
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return {"files_sha256": directory_digest(local, recursive=False)}
    return {"hub": name_or_path, "commit": Path(_hub_snapshot(name_or_path, revision, ["config.json"], key)).name}


def is_tokenizer_file(name: str) -> bool:
    """Whether a model folder's file is one AutoTokenizer reads (not weights or the model config)."""
    return name.startswith("tokenizer") or name.endswith((".model", ".tiktoken")) or name in (
        "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja")


def tokenizer_identity(name_or_path: str, revision: Optional[str] = None, key: str = "name_or_path") -> dict:
    """What identifies a pretrained spec's tokenizer: a local folder's tokenizer files by content
    (its weights may change without changing tokenization), a hub id by its resolved commit."""
    from rlhf_scaling.fingerprint import directory_digest

    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return {"tokenizer_files_sha256": directory_digest(local, recursive=False, select=is_tokenizer_file)}
    return model_identity(name_or_path, revision, key)


def load_tokenizer(spec):
    """Tokenizer of a pretrained spec (a tiny spec uses the task's own tokenizer)."""
    tok = AutoTokenizer.from_pretrained(resolve_model(spec.name_or_path, spec.revision),
                                        trust_remote_code=spec.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_policy(spec, tokenizer) -> PreTrainedModel:
    """Causal LM from a spec: tiny (random init, seeded by the caller) or pretrained."""
    if spec.source == "tiny":
        cfg = tiny_config(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
        return GPTNeoXForCausalLM(cfg)
    return AutoModelForCausalLM.from_pretrained(
        resolve_model(spec.name_or_path, spec.revision), trust_remote_code=spec.trust_remote_code, use_safetensors=True
    )


def save_policy(model: PreTrainedModel, tokenizer, directory: Path) -> None:
    """save_pretrained with safetensors, plus the tokenizer, so the dir loads as `source=pretrained`."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def load_policy(directory: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 0/1 mask -> (B,) index of the last real token, for left or right padding.

    Right padding [1 1 1 0 0] -> 2; left padding [0 0 1 1 1] -> 4. A row with no real token is an error.
    """
    if not bool(attention_mask.any(dim=1).all()):
        raise ValueError("a row of the batch has no real (attention_mask = 1) token")
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


class RewardModel(nn.Module):
    """Backbone + scalar head at the last real token. `offset` re-centres rewards (subtracted)."""

    def __init__(self, backbone: PreTrainedModel):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        self.init_head()
        self.register_buffer("offset", torch.zeros(()))

    def init_head(self) -> None:
        """The fresh head's init: N(0, 1/(H+1)) weights, zero bias."""
        nn.init.normal_(self.head.weight, std=1.0 / (self.head.in_features + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, padding_free: bool = False) -> torch.Tensor:
        """(B, L) token ids and 0/1 mask -> (B,) rewards (float32, minus `offset`).

        padding_free: pack the sequences end to end (rlhf_scaling/packing.py; each row's real tokens
        must be contiguous, as left or right padding leaves them), so padding costs no compute; the
        rewards equal the padded forward's up to float rounding (tested).
        """
        last = last_token_index(attention_mask)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        if padding_free:
            pooled = packed_hidden_states(self.backbone, input_ids, plan_packing(attention_mask), rows, last)
        else:
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
            ).last_hidden_state
            pooled = hidden[rows, last]
        return self.head(pooled).squeeze(-1).float() - self.offset


def build_reward_model(spec, tokenizer) -> RewardModel:
    """Reward model from a spec: a tiny random backbone, or a pretrained backbone with a fresh head."""
    if spec.source == "tiny":
        cfg = tiny_config(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
        return RewardModel(GPTNeoXModel(cfg))
    backbone = AutoModel.from_pretrained(
        resolve_model(spec.name_or_path, spec.revision), trust_remote_code=spec.trust_remote_code, use_safetensors=True
    )
    return RewardModel(backbone)


def save_reward_model(model: RewardModel, directory: Path, meta: Optional[dict] = None) -> None:
    """config.json of the backbone + every weight (head and offset too) in one safetensors file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.backbone.config.save_pretrained(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / REWARD_MODEL_FILE))
    (directory / REWARD_META_FILE).write_text(strict_json(meta or {}, indent=2))


def load_reward_model(directory: Path) -> RewardModel:
    """Inverse of save_reward_model; raises with the key names on a shape or key mismatch."""
    directory = Path(directory)
    if not (directory / REWARD_MODEL_FILE).is_file():
        raise FileNotFoundError(f"no reward model in {directory} (expected {REWARD_MODEL_FILE})")
    config = AutoConfig.from_pretrained(directory)
    model = RewardModel(AutoModel.from_config(config))
    state = load_file(str(directory / REWARD_MODEL_FILE))
    load_state_strict(model, state, str(directory))
    return model


class CheckpointMismatch(ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into (a user error:
    the wrong folder, or a config that changed the shape)."""


def load_state_strict(model: nn.Module, state: dict, where: str) -> None:
    """load_state_dict that names the first missing/unexpected/mis-shaped key in a one-line error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointMismatch(f"{where}: checkpoint keys do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointMismatch(f"{where}: {key} has shape {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} in the model")
    model.load_state_dict(state)


def count_parameters(model: nn.Module, exclude_embeddings: bool = True) -> int:
    """Parameter count; Gao et al. and Kaplan et al. count non-embedding parameters."""
    total = 0
    for name, p in model.named_parameters():
        if exclude_embeddings and ("embed" in name or name.endswith("embed_out.weight")):
            continue
        total += p.numel()
    return total
