"""Comparisons from gold-scored responses, label noise, ties, and the diversity budget."""

import random
from itertools import combinations

import pytest

from rlhf_scaling.config import DataConfig, n_train_prompts, pairs_per_prompt
from rlhf_scaling.data.comparisons import LabelStats, label_group, split_eval


@pytest.mark.parametrize("k, budget, prompts", [(2, 3072, 3072), (4, 3072, 512), (16, 3120, 26)])
def test_diversity_split_at_fixed_budget(k, budget, prompts):
    data = DataConfig(responses_per_prompt=k, comparison_budget=budget)
    assert n_train_prompts(data) == prompts
    assert n_train_prompts(data) * pairs_per_prompt(k) == budget


def test_label_group_has_all_pairs_consistent_with_gold():
    stats = LabelStats()
    g = label_group("p", ["a", "b", "c", "d"], [0.5, 2.0, -1.0, 1.0], label_noise=0.0, rng=random.Random(0), stats=stats)
    assert len(g.pairs) == 6 and stats.pairs == 6 and stats.ties == 0
    assert {frozenset(p) for p in g.pairs} == {frozenset(c) for c in combinations(range(4), 2)}
    for (w, l), m in zip(g.pairs, g.margins):
        assert g.gold[w] > g.gold[l] and m == pytest.approx(g.gold[w] - g.gold[l])


def test_label_noise_flips_at_the_asked_rate():
    stats, rng, wrong = LabelStats(), random.Random(0), 0
    for _ in range(2000):
        g = label_group("p", ["a", "b"], [1.0, 0.0], label_noise=0.2, rng=rng, stats=stats)
        wrong += g.pairs[0] == (1, 0)
    assert wrong == stats.flipped
    assert 0.17 < stats.flipped / stats.pairs < 0.23


def test_ties_are_coin_flips_and_counted():
    stats, rng = LabelStats(), random.Random(0)
    winners = [label_group("p", ["a", "b"], [1.0, 1.0], label_noise=0.0, rng=rng, stats=stats).pairs[0][0]
               for _ in range(1000)]
    assert stats.ties == 1000
    assert 0.45 < sum(w == 0 for w in winners) / 1000 < 0.55


def test_split_eval_is_disjoint_and_seeded():
    groups = list(range(100))
    tr, ev = split_eval(groups, 10, seed=3)
    assert len(ev) == 10 and set(tr).isdisjoint(ev) and set(tr) | set(ev) == set(groups)
    assert split_eval(groups, 10, seed=3) == (tr, ev)


def test_split_eval_by_prompt_holds_out_whole_prompts():
    groups = [label_group(f"p{i % 7}", ["a", "b"], [1.0, 0.0], label_noise=0.0, rng=random.Random(0), stats=LabelStats())
              for i in range(30)]
    tr, ev = split_eval(groups, 2, seed=0, key=lambda g: g.prompt)
    held = {g.prompt for g in ev}
    assert len(held) == 2 and not held & {g.prompt for g in tr} and len(tr) + len(ev) == 30
