"""The FLOP counter (rlhf_scaling/compute.py): N by hand from a tiny model's config, and the
6N / 2N / 2N rules."""

from types import SimpleNamespace

import pytest
from transformers import AutoModel, GPTNeoXForCausalLM

from rlhf_scaling.actor_critic import Critic, value_head
from rlhf_scaling.compute import FlopCounter, gold_params, non_embedding_params
from rlhf_scaling.models import RewardModel, tiny_config


def hand_count(n_layer: int, d: int) -> int:
    """GPT-NeoX non-embedding parameters: per layer two LayerNorms (2·2d), the fused QKV
    projection (d·3d + 3d), the attention output (d·d + d), the MLP (d·4d + 4d and 4d·d + d);
    then the final LayerNorm (2d). Token embedding (embed_in) and unembedding (embed_out) excluded."""
    per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return n_layer * per_layer + 2 * d


@pytest.mark.parametrize("n_layer,d,heads", [(2, 64, 4), (1, 16, 2), (3, 32, 4)])
def test_non_embedding_params_match_a_hand_count_from_the_config(n_layer, d, heads):
    spec = SimpleNamespace(n_layer=n_layer, d_model=d, n_head=heads, max_position=128)
    config = tiny_config(spec, vocab_size=211, pad_token_id=0, eos_token_id=1)
    policy = GPTNeoXForCausalLM(config)
    assert non_embedding_params(policy) == hand_count(n_layer, d)
    # The embeddings really are there and large (the vocabulary is not in N).
    assert sum(p.numel() for p in policy.parameters()) == hand_count(n_layer, d) + 2 * 211 * d
    # A proxy RM: the backbone plus its scalar head (d + 1); the critic likewise; a shared critic is the head alone.
    assert non_embedding_params(RewardModel(AutoModel.from_config(config))) == hand_count(n_layer, d) + d + 1
    assert non_embedding_params(Critic(policy)) == hand_count(n_layer, d) + d + 1
    assert non_embedding_params(value_head(d)) == d + 1


def test_tied_embeddings_are_excluded_once():
    spec = SimpleNamespace(n_layer=1, d_model=16, n_head=2, max_position=64)
    config = tiny_config(spec, vocab_size=50, pad_token_id=0, eos_token_id=1)
    config.tie_word_embeddings = True
    assert non_embedding_params(GPTNeoXForCausalLM(config)) == hand_count(1, 16)


def test_counter_rules_accumulate_and_resume():
    flops = FlopCounter()
    assert flops.train(1000, 10) == 60_000
    assert flops.forward(1000, 10) == 20_000
    assert flops.generate(500, 4) == 4_000
    assert flops.flops == 84_000
    again = FlopCounter()
    again.load_state_dict(flops.state_dict())
    again.forward(1, 1)
    assert again.flops == 84_002


def test_programmatic_gold_costs_nothing_and_a_model_gold_its_parameters():
    assert gold_params(object()) == 0
    config = tiny_config(SimpleNamespace(n_layer=1, d_model=16, n_head=2, max_position=64), 50, 0, 1)
    assert gold_params(SimpleNamespace(model=GPTNeoXForCausalLM(config))) == hand_count(1, 16)
