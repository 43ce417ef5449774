"""Padding-free forwards: packed rollouts give the padded forward's outputs and gradients at real tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from rlhf_scaling.config import ConfigError
from rlhf_scaling.packing import pack, packed_hidden_states, plan_packing, position_ids_from_mask
from rlhf_scaling.actor_critic import Critic, ResponseBatch, check_plain_lm_head, logits_and_values, value_head

VOCAB, PAD = 40, 0


def tiny_lm(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, rotary_pct=0.25, max_position_embeddings=64,
                        attention_dropout=0.0, hidden_dropout=0.0, pad_token_id=PAD, eos_token_id=1, bos_token_id=1)
    return GPTNeoXForCausalLM(cfg)


def ppo_batch(prompt_lengths, response_lengths, n_prompt: int, n_response: int, seed: int = 1):
    """[left-padded prompt | right-padded response] ids and mask, as sampling.sample lays them out."""
    g = torch.Generator().manual_seed(seed)
    B = len(prompt_lengths)
    mask = torch.zeros(B, n_prompt + n_response, dtype=torch.long)
    for b, (q, r) in enumerate(zip(prompt_lengths, response_lengths)):
        mask[b, n_prompt - q:n_prompt + r] = 1
    ids = torch.randint(2, VOCAB, mask.shape, generator=g) * mask + PAD * (1 - mask)
    return ids, mask


def test_plan_packs_every_real_token_once_into_at_most_b_rows_of_the_padded_width():
    ids, mask = ppo_batch([3, 1, 4, 2, 4, 1], [5, 1, 2, 0, 3, 5], n_prompt=4, n_response=5)
    plan = plan_packing(mask)
    R, W = plan.position_ids.shape
    assert W == mask.shape[1] and R <= mask.shape[0]
    assert R < mask.shape[0]  # this batch is 50% padding: packing must save rows
    real = plan.flat_index[mask.bool()]
    assert real.unique().numel() == int(mask.sum())  # no two tokens share a slot
    packed = pack(plan, ids, PAD)
    assert sorted(packed.view(-1)[real].tolist()) == sorted(ids[mask.bool()].tolist())
    # Positions restart at 0 for each rollout and count its real tokens, as the padded forward's do.
    assert torch.equal(plan.position_ids.view(-1)[real], position_ids_from_mask(mask)[mask.bool()])


def test_a_gap_inside_a_row_is_refused():
    mask = torch.tensor([[1, 0, 1, 1]])
    with pytest.raises(ValueError, match="contiguous"):
        plan_packing(mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_hidden_states_equal_the_padded_forward_at_every_real_token(seed):
    g = torch.Generator().manual_seed(seed)
    B, n_prompt, n_response = 7, 5, 9
    q = torch.randint(1, n_prompt + 1, (B,), generator=g).tolist()
    r = torch.randint(1, n_response + 1, (B,), generator=g).tolist()
    ids, mask = ppo_batch(q, r, n_prompt, n_response, seed)
    model = tiny_lm(seed).eval()
    padded = model.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).last_hidden_state
    b, l = mask.nonzero(as_tuple=True)
    packed = packed_hidden_states(model.base_model, ids, plan_packing(mask), b, l, PAD)
    torch.testing.assert_close(packed, padded[b, l], rtol=1e-5, atol=1e-5)


def policy_and_critic(kind: str):
    """A tiny policy and its critic (ppo.critic=kind) with a non-zero value head: a zero-initialised
    head would hide value errors."""
    policy = tiny_lm(3)
    critic = Critic(policy) if kind == "separate" else value_head(policy.config.hidden_size)
    head = critic.head if kind == "separate" else critic
    torch.nn.init.normal_(head.weight, std=0.1)
    return policy, critic


@pytest.mark.parametrize("kind", ["separate", "shared"])
def test_padding_free_logits_values_and_gradients_match_the_padded_path(kind):
    ids, mask = ppo_batch([4, 2, 3, 1, 4], [6, 1, 3, 2, 4], n_prompt=4, n_response=6)
    n_prompt, r_mask = 4, mask[:, 4:].float()
    results = {}
    for padding_free in (False, True):
        policy, critic = policy_and_critic(kind)
        batch = ResponseBatch.of(ids, mask, n_prompt, padding_free)
        logits, values = logits_and_values(policy, critic, batch, temperature=0.7)
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, n_prompt:, None]).squeeze(-1)
        loss = (logp * r_mask).sum() + (values * r_mask).pow(2).sum()
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in [*policy.parameters(), *critic.parameters()] if p.grad is not None])
        results[padding_free] = (logits, values, grads)
    keep = r_mask.bool()
    torch.testing.assert_close(results[True][0][keep], results[False][0][keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[True][1][keep], results[False][1][keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[True][2], results[False][2], rtol=1e-4, atol=1e-5)
    assert results[True][1][~keep].abs().sum() == 0  # padding is not computed, and reads 0


@pytest.mark.parametrize("kind", ["separate", "shared"])
def test_a_minibatch_of_a_packed_batch_gives_the_full_batchs_outputs_at_its_rows(kind):
    ids, mask = ppo_batch([4, 2, 3, 1, 4, 2], [6, 1, 3, 2, 4, 5], n_prompt=4, n_response=6)
    policy, critic = policy_and_critic(kind)
    full = ResponseBatch.of(ids, mask, 4, True)
    rows = torch.tensor([4, 1, 5])
    keep = mask[rows, 4:].bool()
    for sub, whole in zip(logits_and_values(policy, critic, full.rows(rows), 1.0), logits_and_values(policy, critic, full, 1.0)):
        torch.testing.assert_close(sub[keep], whole[rows][keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding_free", [False, True])
def test_shared_critic_values_come_from_the_policy_trunk_and_train_it(padding_free):
    """ppo.critic=shared: the values are the head on the policy's own last hidden states, so the value
    loss reaches the policy's transformer; with a separate critic it never does."""
    ids, mask = ppo_batch([4, 2, 3], [6, 1, 3], n_prompt=4, n_response=6)
    r_mask = mask[:, 4:].float()
    batch = ResponseBatch.of(ids, mask, 4, padding_free)
    for kind in ("shared", "separate"):
        policy, critic = policy_and_critic(kind)
        _, values = logits_and_values(policy, critic, batch, temperature=1.0)
        if kind == "shared":
            h = policy.base_model(input_ids=ids, attention_mask=mask,
                                  position_ids=position_ids_from_mask(mask)).last_hidden_state[:, 3:-1]
            torch.testing.assert_close(values[r_mask.bool()], critic(h).squeeze(-1)[r_mask.bool()], rtol=1e-5, atol=1e-5)
        (values * r_mask).pow(2).sum().backward()  # a value loss alone
        trunk_grad = sum(p.grad.abs().sum() for p in policy.base_model.parameters() if p.grad is not None)
        assert (trunk_grad > 0) == (kind == "shared"), kind


def test_models_that_rescale_logits_after_the_head_are_refused_for_padding_free():
    model = tiny_lm()
    check_plain_lm_head(model)  # GPT-NeoX: plain head
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ConfigError, match="ppo.padding_free=false"):
        check_plain_lm_head(model)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_free_reward_model_gives_the_padded_rewards_and_gradients(side):
    """RewardModel(padding_free=True), as rm_train.padding_free trains and evaluates it: the score at
    each sequence's last real token and the gradients equal the padded forward's."""
    from rlhf_scaling.models import RewardModel

    lengths = [7, 2, 5, 1, 9, 4]
    g = torch.Generator().manual_seed(4)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = 1
        else:
            mask[b, mask.shape[1] - n:] = 1
    ids = torch.randint(2, VOCAB, mask.shape, generator=g) * mask + PAD * (1 - mask)
    results = {}
    for padding_free in (False, True):
        rm = RewardModel(tiny_lm(5).base_model)
        rewards = rm(ids, mask, padding_free)
        (rewards * torch.arange(1.0, len(lengths) + 1)).sum().backward()
        results[padding_free] = rewards, torch.cat([p.grad.flatten() for p in rm.parameters() if p.grad is not None])
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-4, atol=1e-5)


class CrossAttendingBackbone(torch.nn.Module):
    """A base model that ignores packing: every token of a row attends to all before it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return self.inner(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)


def test_a_backbone_that_does_not_pack_exactly_is_refused_with_the_key_to_turn_off():
    from rlhf_scaling.packing import packs_exactly, require_exact_packing

    model = tiny_lm(0)
    assert packs_exactly(model.base_model) and packs_exactly(tiny_lm(0).base_model.to(torch.bfloat16))
    require_exact_packing(model.base_model, "rm_train.padding_free")  # GPT-NeoX packs exactly
    with pytest.raises(ConfigError, match="set rm_train.padding_free=false"):
        require_exact_packing(CrossAttendingBackbone(model.base_model), "rm_train.padding_free")
