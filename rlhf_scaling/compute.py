"""Compute accounting: cumulative FLOPs of a job, so scaling figures can put compute on x.

The standard approximations (Kaplan et al. 2020 §2.1; Hoffmann et al. 2022 App. F), with N the
NON-EMBEDDING parameter count of the model doing the work:
    training (forward + backward)   ≈ 6 · N · tokens
    forward-only scoring            ≈ 2 · N · tokens
    generation                      ≈ 2 · N · tokens (the prompt's prefill and every generated token)
"tokens" are real (non-padding) tokens. Not counted: attention's sequence-length term
(2 · n_layer · ctx · d_model per token), embedding lookups and the LM head (embeddings are outside
N), padding and the positions a batched generate computes for rows that already ended, optimizer
and other elementwise work, and a gold that is a program rather than a model.
"""

from __future__ import annotations

from torch import nn


def non_embedding_params(model: nn.Module) -> int:
    """Parameters of `model` outside its token/position embeddings and output (unembedding) matrix.

    Found by identity, not name: every submodule's get_input_embeddings()/get_output_embeddings()
    (Hugging Face models) and every nn.Embedding; tied weights are excluded once."""
    excluded = set()
    for module in model.modules():
        for getter in ("get_input_embeddings", "get_output_embeddings"):
            try:
                emb = getattr(module, getter)() if hasattr(module, getter) else None
            except (NotImplementedError, AttributeError):
                emb = None
            if emb is not None:
                excluded.update(id(p) for p in emb.parameters())
        if isinstance(module, nn.Embedding):
            excluded.update(id(p) for p in module.parameters())
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in excluded and id(p) not in seen:
            seen.add(id(p))
            total += getattr(p, "ds_numel", p.numel())  # ZeRO-3 shards hold the full size in ds_numel
    return total


def gold_params(gold) -> int:
    """N of a gold that is a model (gold.ModelGold: its `model`); 0 for a programmatic gold."""
    model = getattr(gold, "model", None)
    return non_embedding_params(model) if isinstance(model, nn.Module) else 0


class FlopCounter:
    """Cumulative FLOPs of one job. Each method adds the work of `tokens` real tokens through a
    model of `n_params` non-embedding parameters and returns the FLOPs it added."""

    def __init__(self, flops: float = 0.0):
        self.flops = float(flops)

    def train(self, n_params: int, tokens: int) -> float:
        """Forward + backward: 6 · N · tokens."""
        return self._add(6.0 * n_params * tokens)

    def forward(self, n_params: int, tokens: int) -> float:
        """Forward-only scoring (log-probs, values, rewards): 2 · N · tokens."""
        return self._add(2.0 * n_params * tokens)

    def generate(self, n_params: int, tokens: int) -> float:
        """Sampling: 2 · N per token of prompt prefill and per generated token."""
        return self._add(2.0 * n_params * tokens)

    def _add(self, flops: float) -> float:
        self.flops += flops
        return flops

    def state_dict(self) -> dict:
        return {"flops": self.flops}

    def load_state_dict(self, state: dict) -> None:
        self.flops = float(state["flops"])
