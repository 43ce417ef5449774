"""RM batches: each response forwarded once, pairs indexed into it, over-length responses reported."""

import torch

from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.data.rm_batches import collate, encode_groups, expand_pairs
from rlhf_scaling.data.synthetic import build_tokenizer, make_task
from rlhf_scaling.losses import kwise_loss

TOK = build_tokenizer(make_task(8, 6, 6, 16))
G4 = PreferenceGroup("about ocean : wave tide", ("wave", "wave tide", "salt reef coral", "the"),
                     ((2, 1), (2, 0), (2, 3), (1, 0), (1, 3), (0, 3)))
G2 = PreferenceGroup("about city : bus street", ("bus tower", "the"), ((0, 1),))


def test_one_row_per_response_and_pairs_match_expanded_bt():
    enc, cut = encode_groups([G4, G2], TOK, max_response_tokens=16)
    batch = collate(enc, TOK.pad_token_id)
    assert batch.input_ids.shape[0] == 4 + 2 and cut == 0  # K rows per group, not one per pair side
    rewards = torch.randn(6)
    grid = batch.reward_grid(rewards)
    loss = kwise_loss(grid, batch.pairs, batch.pair_mask)
    # The same comparisons expanded into K=2 groups give the same BT loss (at 2 forwards per pair).
    pairs = expand_pairs([G4, G2])
    assert len(pairs) == 7
    flat = {(0, k): rewards[k] for k in range(4)} | {(1, k): rewards[4 + k] for k in range(2)}
    chosen = torch.stack([flat[(0, w)] for w, _ in G4.pairs] + [flat[(1, 0)]])
    rejected = torch.stack([flat[(0, l)] for _, l in G4.pairs] + [flat[(1, 1)]])
    torch.testing.assert_close(loss, -torch.nn.functional.logsigmoid(chosen - rejected).mean())  # BT, written out


def test_over_length_responses_are_truncated_and_counted_not_dropped():
    long = PreferenceGroup("about ocean : wave tide", (" ".join(["wave"] * 30), "tide"), ((1, 0),))
    enc, cut = encode_groups([long, G2], TOK, max_response_tokens=16)
    assert cut == 1 and len(enc) == 2
    prompt_len = len(TOK("about ocean : wave tide", add_special_tokens=False)["input_ids"])
    assert len(enc[0].seqs[0]) == prompt_len + 16 + 1  # cut to the budget, EOS kept last
    assert enc[0].seqs[0][-1] == TOK.eos_token_id
