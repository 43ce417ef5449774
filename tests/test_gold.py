"""The synthetic gold reward's worked values and the model-gold path from a local directory."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

from rlhf_scaling.data.synthetic import build_tokenizer, make_task, sample_demonstrations
from rlhf_scaling.gold import ModelGold, SyntheticGold

TASK = make_task(8, 6, 6, 16)


def test_synthetic_gold_worked_values():
    gold = SyntheticGold(TASK)
    p = "about ocean : wave tide"
    assert gold.score_one(p, "wave tide salt") == pytest.approx(3 - 0.03)
    # a repeat costs 1 and gains nothing
    assert gold.score_one(p, "wave tide salt salt") == pytest.approx(3 - 1 - 0.04)
    # an off-topic word costs 0.5
    assert gold.score_one(p, "wave tide tree") == pytest.approx(2 - 0.5 - 0.03)
    # beyond natural length (6): 0.5 per extra word, here with filler beyond one
    long = "wave tide salt coral whale reef the and"
    assert gold.score_one(p, long) == pytest.approx(6 - 0.25 - 0.5 * 2 - 0.08)
    # hitting the token budget without ending counts as unfinished
    assert gold.score_one(p, " ".join(["the"] * 16)) < -5


def test_repetition_exploit_lowers_gold_while_length_rises():
    """The exploitable structure: more on-topic tokens past the natural length lower gold."""
    gold = SyntheticGold(TASK)
    p = "about ocean : wave tide"
    honest = "wave tide salt coral whale reef"
    padded = honest + " wave tide salt coral"
    assert gold.score_one(p, padded) < gold.score_one(p, honest)


def test_longer_demonstrations_are_usually_better():
    prompts, demos = sample_demonstrations(TASK, 2000, seed=0)
    g = SyntheticGold(TASK).score(prompts, demos)
    lengths = torch.tensor([len(d.split()) for d in demos], dtype=torch.float32)
    assert torch.corrcoef(torch.stack([g, lengths]))[0, 1] > 0.3


def test_model_gold_scores_from_a_local_directory(tmp_path):
    tok = build_tokenizer(TASK)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPTNeoXForSequenceClassification(cfg).save_pretrained(tmp_path / "gold")
    tok.save_pretrained(tmp_path / "gold")
    gold = ModelGold(str(tmp_path / "gold"), batch_size=2)
    scores = gold.score(["about ocean : wave"] * 3, ["wave", "tide salt", "the"])
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    again = gold.score(["about ocean : wave"], ["tide salt"])
    torch.testing.assert_close(again[0], scores[1])  # batching and padding do not change a score


def test_model_gold_refuses_a_directory_without_a_trained_score_head(tmp_path):
    """A causal LM saved with save_pretrained loads as a sequence classifier with a random head:
    refused, naming the path (transformers' loading info lists the missing head)."""
    from transformers import GPTNeoXForCausalLM

    from rlhf_scaling.models import CheckpointMismatch

    tok = build_tokenizer(TASK)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        bos_token_id=tok.eos_token_id)
    GPTNeoXForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(CheckpointMismatch, match=rf"{tmp_path / 'lm'}: not a reward model: score.weight"):
        ModelGold(str(tmp_path / "lm"))
    # A classifier with two outputs is not a one-number gold either.
    cfg.num_labels = 2
    GPTNeoXForSequenceClassification(cfg).save_pretrained(tmp_path / "two")
    tok.save_pretrained(tmp_path / "two")
    with pytest.raises(CheckpointMismatch, match=str(tmp_path / "two")):
        ModelGold(str(tmp_path / "two"))
