"""Sampling: the response mask runs through the first EOS, later tokens are padding, and the
batch is only as wide as its longest response."""

import torch

from rlhf_scaling.data.synthetic import build_tokenizer, make_task
from rlhf_scaling.models import build_policy
from rlhf_scaling.sampling import response_mask_from_ids, sample
from tests.test_models import TINY


def test_mask_runs_through_the_first_eos_only():
    eos = 2
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])
    mask, ended = response_mask_from_ids(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_rollouts_are_trimmed_to_the_longest_response_and_padded_after_eos():
    tok = build_tokenizer(make_task(4, 6, 6, 16))
    torch.manual_seed(0)
    policy = build_policy(TINY, tok)
    torch.manual_seed(1)
    ro = sample(policy, tok, ["a prompt"] * 64, max_new_tokens=12)
    lengths = ro.response_mask.sum(dim=1)
    assert ro.response_ids.shape == ro.response_mask.shape == (64, int(lengths.max()))
    assert int(lengths.max()) <= 12 and int(lengths.min()) >= 1
    # Padding only after the real tokens; an ended row's last real token is its EOS.
    assert (ro.response_ids[ro.response_mask == 0] == tok.pad_token_id).all()
    assert torch.equal(ro.response_mask, (torch.arange(ro.response_mask.shape[1]) < lengths[:, None]).long())
    last = ro.response_ids.gather(1, (lengths - 1)[:, None]).squeeze(1)
    assert (last[ro.ended] == tok.eos_token_id).all() and (last[~ro.ended] != tok.eos_token_id).all()
    assert (lengths[~ro.ended] == 12).all()  # a row without EOS ran to the budget
    assert len(ro.texts) == 64


class _ScriptedPolicy(torch.nn.Module):
    """generate() appends fixed responses (EOS at known places, then junk) to the prompts."""

    def __init__(self, responses):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.responses = torch.tensor(responses)

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        return torch.cat([input_ids, self.responses[: input_ids.shape[0], :max_new_tokens]], dim=1)


def test_batch_width_is_the_longest_response_not_the_budget():
    tok = build_tokenizer(make_task(4, 6, 6, 16))
    eos, junk = tok.eos_token_id, 7
    responses = [[5, 6, eos] + [junk] * 9, [5, eos] + [junk] * 10, [6, 6, 6, 6, eos] + [junk] * 7]
    ro = sample(_ScriptedPolicy(responses), tok, ["a", "b", "c"], max_new_tokens=12)
    assert ro.response_ids.shape == (3, 5)  # the longest response (4 tokens + EOS), not 12
    assert ro.response_mask.sum(dim=1).tolist() == [3, 2, 5]
    assert ro.response_ids[0].tolist() == [5, 6, eos, tok.pad_token_id, tok.pad_token_id]
    assert ro.ended.tolist() == [True, True, True]
