"""Padding-free forwards: the real tokens of a padded batch packed into few rows, no padding computed.

A PPO batch is [left-padded prompt | right-padded response] per rollout, and an RM batch holds
responses of many lengths, so much of a padded (B, L) batch is padding. Packing lays the sequences
end to end in rows of at most L tokens (first fit, in order; a sequence never straddles two rows),
with position ids restarting at 0 for each one. transformers (>= 4.54, `masking_utils.find_packed_sequence_indices`)
reads a drop in the position ids as the start of a new sequence when no attention mask is given
and builds a block-diagonal causal mask, so every token attends only to its own sequence and the
hidden states at real tokens equal the padded forward's up to float rounding (tested; a backbone
that does not do this is caught by `packs_exactly`). Memory never exceeds the padded forward's:
rows are no longer than L and there are at most B of them.

Shapes: B sequences, L padded width, R ≤ B packed rows of width L, N real tokens, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_scaling.config import ConfigError


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B, L) positions counting real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


@dataclass
class PackPlan:
    """Where each real token of a (B, L) batch sits in the packed (R, L) rows.

    flat_index:   (B, L) long, the token's index into the flattened (R·L) packed rows; −1 on padding.
    position_ids: (R, L) position of each packed token within its sequence; the unused tail of a
                  row counts 0, 1, ... as a sequence of its own, so it never attends into a sequence.
    """

    flat_index: torch.Tensor
    position_ids: torch.Tensor


def plan_packing(attention_mask: torch.Tensor) -> PackPlan:
    """Plan for packing a (B, L) batch whose real tokens (mask 1) are contiguous in each row.

    Contiguity holds for a left-padded prompt followed by a right-padded response; it is checked,
    since packing would silently close a gap up.
    """
    mask = attention_mask.bool()
    B, L = mask.shape
    lengths = mask.sum(dim=1)
    cols = torch.arange(L, device=mask.device)[None, :]
    first = mask.to(torch.int8).argmax(dim=1, keepdim=True)
    if not torch.equal((cols >= first) & (cols < first + lengths[:, None]), mask):
        raise ValueError("packing needs each row's real tokens to be contiguous (left or right padding, or a left-padded prompt then a right-padded response)")
    # First fit, in order (a host-side loop over B sequences, microseconds each).
    row_of, offset, used = [], [], []
    for n in lengths.tolist():
        r = next((i for i, u in enumerate(used) if u + n <= L), len(used))
        if r == len(used):
            used.append(0)
        row_of.append(r)
        offset.append(used[r])
        used[r] += n
    rank = position_ids_from_mask(attention_mask)  # (B, L) index of each real token within its sequence
    start = torch.tensor(row_of, device=mask.device) * L + torch.tensor(offset, device=mask.device)
    flat_index = torch.where(mask, start[:, None] + rank, torch.full_like(rank, -1))
    used_t = torch.tensor(used, device=mask.device)
    position_ids = (cols - used_t[:, None]).clamp(min=0).expand(len(used), L).clone()
    position_ids.view(-1)[flat_index[mask]] = rank[mask]
    return PackPlan(flat_index, position_ids)


def pack(plan: PackPlan, x: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """(B, L) padded tensor -> (R, L) packed rows; the unused row tails hold `fill`."""
    out = torch.full(plan.position_ids.shape, fill, dtype=x.dtype, device=x.device)
    keep = plan.flat_index >= 0
    out.view(-1)[plan.flat_index[keep]] = x[keep]
    return out


def take(plan: PackPlan, packed: torch.Tensor, b: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Entries of a packed (R, L, ...) output at padded coordinates (b, l), each (M,) -> (M, ...)."""
    index = plan.flat_index[b, l]
    if bool((index < 0).any()):
        raise IndexError("take() asked for a padding position, which a packed forward does not compute")
    return packed.reshape(-1, *packed.shape[2:])[index]


def packed_hidden_states(backbone, input_ids: torch.Tensor, plan: PackPlan, b: torch.Tensor, l: torch.Tensor,
                         pad_token_id: int = 0) -> torch.Tensor:
    """Last hidden states (M, H) of a padding-free forward of `backbone` (an HF base model) over the
    (B, L) batch `input_ids` packed by `plan` (plan_packing of its mask), read at the M real
    positions (b, l). No KV cache: transformers detects packing only in cache-free forwards."""
    hidden = backbone(input_ids=pack(plan, input_ids, pad_token_id), position_ids=plan.position_ids,
                      attention_mask=None, use_cache=False).last_hidden_state
    return take(plan, hidden, b, l)


@torch.no_grad()
def packs_exactly(backbone, device=None) -> bool:
    """Whether `backbone` (an HF base model) gives its padded forward's hidden states when fed a
    packed batch: True where transformers builds the block-diagonal mask from the position ids
    (models on its masking utilities: GPT-NeoX, Llama, Qwen, Mistral, ...), False where tokens would
    attend across the sequences of a row. Checked on three short sequences (ids 1..5), two of which
    share a packed row: one small forward each way, in the model's own dtype, on `device` (default:
    its first parameter's; give it under ZeRO-3 parameter offload, where that is a placeholder's)."""
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    ids = torch.tensor([[1, 2, 0, 0], [3, 4, 0, 0], [5, 4, 3, 2]]) * mask
    param = next(backbone.parameters())
    ids, mask = ids.to(device or param.device), mask.to(device or param.device)
    was_training = backbone.training
    backbone.eval()
    try:
        padded = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                          use_cache=False).last_hidden_state
        b, l = mask.nonzero(as_tuple=True)
        packed = packed_hidden_states(backbone, ids, plan_packing(mask), b, l).float()
    finally:
        backbone.train(was_training)
    expected = padded[b, l].float()
    # Per token, relative to that token's own state: leakage shows only at the tokens that share a
    # row with another sequence, and a few large channels must not hide it.
    error = (packed - expected).norm(dim=-1) / expected.norm(dim=-1).clamp_min(1e-6)
    return bool(error.max() <= (1e-3 if param.dtype == torch.float32 else 2e-2))


def require_exact_packing(backbone, key: str, device=None) -> None:
    """ConfigError naming `key` (the padding_free setting in use) where `backbone` does not pack
    exactly (packs_exactly), before any packed forward could silently mix sequences."""
    if not packs_exactly(backbone, device):
        raise ConfigError(f"{key}: {type(backbone).__name__} lets packed sequences attend to each other "
                          f"(transformers does not build its mask from the position ids); set {key}=false")
