"""The feature world (task=features, rlhf_scaling/data/feature_world.py): a combinatorial prompt
space, a prompt-conditioned gold whose signal lies in word interactions with a Zipf tail (no
single word carries it), and penalised directions. Pure functions, a few seconds."""

import pytest
import torch

from rlhf_scaling.cli import compose
from rlhf_scaling.config import ConfigError, validate
from rlhf_scaling.data import feature_world as FW
from rlhf_scaling.gold import FeatureGold
from rlhf_scaling.stages.common import setup_task

TASK = FW.make_feature_task(prompt_vocab=64, response_vocab=64, prompt_length=4, n_features=2000,
                            zipf_exponent=0.8, natural_length=8, max_response_tokens=16)
GOLD = FeatureGold(TASK)


def _pairs(n: int, seed: int):
    """n prompts with two demonstrations each, and which one gold prefers."""
    prompts, a = FW.sample_demonstrations(TASK, n, seed=seed)
    _, b = FW.sample_demonstrations(TASK, n, seed=seed + 1)
    return prompts, a, b, (GOLD.score(prompts, a) > GOLD.score(prompts, b)).float()


def _held_out_linear_accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares linear classifier on the first 3/4, accuracy on the last 1/4."""
    n = len(y) * 3 // 4
    w = torch.linalg.lstsq(x[:n], (2 * y[:n] - 1)[:, None]).solution
    return ((x[n:] @ w).squeeze(1) > 0).float().eq(y[n:]).float().mean().item()


def _oracle_accuracy(k: int, prompts, a, b, y) -> float:
    """Pair accuracy of a gold that knows only the k largest features (and the penalties)."""
    weights = torch.cat([TASK.pair_weights.flatten(), TASK.prompt_weights.flatten()])
    keep = torch.zeros_like(weights)
    top = weights.abs().argsort(descending=True)[:k]
    keep[top] = weights[top]
    r = TASK.pair_weights.numel()
    partial = FeatureGold(FW.FeatureTask(**{**TASK.__dict__, "pair_weights": keep[:r].view_as(TASK.pair_weights),
                                            "prompt_weights": keep[r:].view_as(TASK.prompt_weights)}))
    return ((partial.score(prompts, a) > partial.score(prompts, b)).float() == y).float().mean().item()


def test_prompt_space_is_combinatorial():
    """64^4 ≈ 1.7e7 prompts: 10,000 draws are (almost) all distinct, unlike the topics world's ~240."""
    import random

    prompts = FW.sample_prompts(TASK, 10_000, random.Random(0))
    assert len(set(prompts)) >= 9_950


def test_no_single_word_or_length_carries_the_gold_signal_but_the_feature_tail_does():
    """Mean-centring: a linear model of single words and length barely beats chance, while an
    oracle of the top features scores far higher, and more of the Zipf tail scores higher still."""
    prompts, a, b, y = _pairs(8000, seed=5)
    words = FW.presence(a, TASK.response_words) - FW.presence(b, TASK.response_words)
    onehot = lambda texts: torch.nn.functional.one_hot(torch.tensor([len(t.split()) for t in texts]), 17).float()  # noqa: E731
    assert _held_out_linear_accuracy(torch.cat([words, onehot(a) - onehot(b)], 1), y) < 0.65
    top = [_oracle_accuracy(k, prompts, a, b, y) for k in (10, 100, 1000)]
    assert top[0] > 0.72 and top[1] > top[0] + 0.05 and top[2] > top[1] + 0.03, top
    assert FW.centred_presence(a[:50], TASK.response_words).sum(1).abs().max() < 1e-5


def test_gold_depends_on_the_prompt_and_penalises_repeats_length_and_not_ending():
    response = "w1 w2 w3 w4 w5"
    prompts, _ = FW.sample_demonstrations(TASK, 200, seed=3)
    across_prompts = GOLD.score(prompts, [response] * len(prompts))
    assert across_prompts.std() > 0.3  # the same answer is good for some prompts, bad for others
    prompt = prompts[0]
    features = lambda r: FW.feature_scores(TASK, [prompt], [r]).item()  # noqa: E731
    gold = lambda r: GOLD.score([prompt], [r]).item()  # noqa: E731
    repeated = "w1 w2 w3 w4 w5 w5 w5"  # the same words: two repeats
    assert gold(repeated) == pytest.approx(features(repeated) - 2 * FW.REPEAT_PENALTY, abs=1e-5)
    assert features(repeated) == pytest.approx(features(response), abs=1e-5)
    long = " ".join(f"w{i}" for i in range(11))  # 3 words beyond natural_length=8
    assert gold(long) == pytest.approx(features(long) - 3 * FW.LENGTH_PENALTY, abs=1e-5)
    full = " ".join(f"w{i}" for i in range(16))  # hit max_response_tokens: unfinished too
    assert gold(full) == pytest.approx(features(full) - 8 * FW.LENGTH_PENALTY - FW.UNFINISHED_PENALTY, abs=1e-5)


def test_gold_penalises_answers_shorter_than_min_length_and_the_default_world_sets_it():
    """Without it an empty or one-word answer scores ~0, above the tiny SFT policy's mean (~-0.5),
    and PPO against a weak proxy collapsed to one word with gold flat at 0 (docs/world.md, sixth session)."""
    prompts, _ = FW.sample_demonstrations(TASK, 50, seed=4)
    short = FeatureGold(FW.FeatureTask(**{**TASK.__dict__, "min_length": 3}))
    for response, words_short in [("", 3), ("w1", 2), ("w1 w2", 1), ("w1 w2 w3", 0), ("w1 w2 w3 w4 w5", 0)]:
        diff = GOLD.score(prompts, [response] * 50) - short.score(prompts, [response] * 50)
        assert diff.tolist() == pytest.approx([words_short * FW.SHORT_PENALTY] * 50, abs=1e-5), response
    assert GOLD.score(prompts, [""] * 50).abs().max() < 1e-5  # min_length 0: the empty answer is a free 0
    setup = setup_task(compose(["stage=data"]))  # the default world
    assert setup.task.min_length == 2
    assert setup.gold.score(["q1 q2 q3 q4"], [""]).item() == pytest.approx(-2 * FW.SHORT_PENALTY, abs=1e-5)
    with pytest.raises(ConfigError, match="task.min_length"):
        validate(compose(["task.min_length=9"]))
    with pytest.raises(ConfigError, match="task.min_length"):
        validate(compose(["task.min_length=-1"]))
    with pytest.raises(ConfigError, match="task.min_length: 2 has no effect outside the feature world"):
        validate(compose(["task=synthetic", "task.min_length=2"]))


def test_task_features_builds_this_world_and_refuses_impossible_sizes():
    cfg = compose(["task=features", "stage=data"])
    setup = setup_task(cfg)
    assert isinstance(setup.gold, FeatureGold) and len(setup.tokenizer) == 3 + 16 + 16
    assert setup.prompts(3, seed=1) == setup.prompts(3, seed=1) != setup.prompts(3, seed=2)
    # exclude leaves prompts out of the same draw: nothing excluded is the plain draw, one excluded is skipped
    first = setup.prompts(3, seed=1)
    assert setup.prompts(3, seed=1, exclude=frozenset()) == first
    assert setup.prompts(3, seed=1, exclude={first[0]}) == first[1:] + setup.prompts(4, seed=1)[3:]
    with pytest.raises(ConfigError, match="task.n_features"):
        validate(compose(["task=features", "task.response_vocab=8", "task.prompt_vocab=8"]))
    with pytest.raises(ConfigError, match="task.world"):
        validate(compose(["task.world=nope"]))
