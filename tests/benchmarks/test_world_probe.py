"""benchmarks/world_probe.py, the feature world's cheap diagnosis (docs/world.md): the user's command
runs and prints one JSON line per result, and the numbers mean what docs/world.md says they mean
(the right-hypothesis probe learns gold's interactions; a random teacher gold depends on the prompt)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import world_probe  # noqa: E402

from rlhf_scaling.data import feature_world as FW  # noqa: E402
from rlhf_scaling.data.synthetic import build_tokenizer  # noqa: E402
from rlhf_scaling.gold import FeatureGold  # noqa: E402


def small_task():
    return FW.make_feature_task(prompt_vocab=16, response_vocab=16, prompt_length=4, n_features=200,
                                zipf_exponent=0.8, natural_length=8, max_response_tokens=16)


@pytest.mark.slow
def test_probe_learns_the_interactions_and_rank_limits_it():
    """On 2,000 pairs the bilinear learner beats length + single words (~0.6 in docs/world.md) by far;
    a rank-1 learner (A, B of rank 1) cannot represent 100 random pair weights and scores lower."""
    task = small_task()
    gold = FeatureGold(task)
    train, test = world_probe.labelled_pairs(task, gold, 2000, seed=1), world_probe.labelled_pairs(task, gold, 1000, seed=2)
    assert all(gold.score([p], [w]) > gold.score([p], [l]) for p, w, l in zip(*(x[:50] for x in train)))
    full = world_probe.probe_accuracy(task, train, test, rank=0, steps=150, l2s=(1e-3,))
    rank1 = world_probe.probe_accuracy(task, train, test, rank=1, steps=150, l2s=(1e-3,))
    assert full > 0.8, full
    assert rank1 < full - 0.05, (rank1, full)


def test_teacher_gold_depends_on_prompt_and_response():
    task = small_task()
    teacher = world_probe.TeacherGold(build_tokenizer(task), "s", init_range=0.2)
    rng = random.Random(0)
    prompts = FW.sample_prompts(task, 64, rng)
    responses = [FW.sample_demonstration(task, rng) for _ in prompts]
    base = teacher.score(prompts, responses)
    assert base.shape == (64,) and base.std() > 0
    assert not torch.allclose(base, teacher.score(prompts[::-1], responses), atol=1e-4)  # the prompt matters
    assert not torch.allclose(base, teacher.score(prompts, responses[::-1]), atol=1e-4)  # the response matters


@pytest.mark.slow
def test_cli_prints_one_json_line_per_rm_run():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "world_probe.py"), "rm", "--vocab", "16", "--n-features", "200",
         "--n", "300", "--models", "xs", "s", "--seeds", "0", "1", "--steps", "6", "--test-pairs", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["model"], r["seed"]) for r in rows] == [("xs", 0), ("xs", 1), ("s", 0), ("s", 1)]
    assert all(len(r["hist"]) == 6 and 0 <= r["hist"][-1][1] <= 1 for r in rows)
    assert rows[0]["non_embedding"] < rows[2]["non_embedding"]


@pytest.mark.slow
def test_early_stopping_stops_on_the_validation_loss_and_keeps_that_step():
    """With --patience the RM is evaluated every --eval-every steps on test AND validation pairs and stops
    once the validation loss has not improved for `patience` evaluations: `steps` is only a cap, and the
    reported `best` is the evaluation with the lowest validation loss (not the best test accuracy)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "world_probe.py"), "rm", "--vocab", "16", "--n-features", "200",
         "--n", "200", "--models", "xs", "--lr", "1e-2", "--steps", "3000", "--patience", "2", "--eval-every", "5",
         "--min-steps", "20", "--test-pairs", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    hist = row["hist"]
    assert all(len(h) == 4 for h in hist) and [h[0] for h in hist] == list(range(5, 5 * len(hist) + 1, 5))
    assert 20 <= hist[-1][0] < 3000  # stopped long before the cap, not before min_steps
    best = min(hist, key=lambda h: h[3])
    assert row["best"] == best
    assert hist[-1][0] == max(best[0] + 2 * 5, 20)  # `patience` evaluations after the best, not before min_steps
    assert world_probe.accuracy(row) == best[1]


def _rows(axis_values, seeds, acc):
    """rm rows (as `rm` prints them) with accuracy acc(x, seed)."""
    return [{"mode": "rm", "model": f"m{x}", "non_embedding": x, "n": 1000, "seed": s, "hist": [[1, acc(x, s)]]}
            for x in axis_values for s in seeds]


def test_summary_reports_slope_span_monotonicity_and_the_error_power_law():
    """Known slopes come back: accuracy = 0.5 + 0.02 ln x + seed offset gives slope 0.02 with a zero-width
    interval; a dip in one seed is counted as non-monotonic; error = 0.4 n^-0.25 gives b = 0.25."""
    import math

    rows = _rows([100, 1000, 10000], [0, 1, 2], lambda x, s: 0.5 + 0.02 * math.log(x) + 0.01 * s)
    text = world_probe.summarise(rows)
    assert "slope of accuracy vs ln x 0.0200 [0.0200, 0.0200]" in text
    assert f"span m100 -> m10000 {0.02 * math.log(100):.4f}" in text and "monotonic in 3 of 3 seeds" in text
    rows[4]["hist"] = [[1, 0.1]]  # model m1000, seed 1: below m100
    assert "monotonic in 2 of 3 seeds" in world_probe.summarise(rows)
    data = [{**r, "model": "s", "non_embedding": 7, "n": r["non_embedding"]} for r in
            _rows([1000, 2000, 4000, 8000, 16000], [0, 1], lambda n, s: 1 - 0.4 * n ** -0.25)]
    assert "b 0.2500 [0.2500, 0.2500]" in world_probe.summarise(data)
    with pytest.raises(ValueError, match="two rm runs of model m100, n 1000, seed 0"):  # e.g. the same RM at two lrs
        world_probe.summarise(rows + [dict(rows[0])])


def _write_bon_run(folder: Path, proxy: str, n_params: float, replicate: int, gains: list, k: int = 4) -> None:
    """A best-of-n job's run folder as the tracker writes it (config, metrics, summary, status), gold gain
    `gains[i]` at n = 2^i and a proxy rising in sqrt KL."""
    import math

    folder.mkdir(parents=True)
    config = {"experiment": "world", "replicate": replicate, "seed": 0, "stage": {"name": "bon"},
              "rm": {"name": proxy, "source": "tiny", "n_params": n_params},
              "data": {"comparison_budget": 3840, "responses_per_prompt": k}, "tracking": {"mode": "disabled"}}
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "metrics.jsonl", "w") as fh:
        for i, gain in enumerate(gains):
            n = 2 ** i
            d = math.sqrt(math.log(n) - (n - 1) / n)
            fh.write(json.dumps({"_step": i, "bon/n": n, "bon/sqrt_kl": d, "bon/kl": d * d, "bon/gold": gain - 0.4,
                                 "bon/proxy": 0.7 * d}) + "\n")
    (folder / "summary.json").write_text(json.dumps({"bon/n_max": 2 ** (len(gains) - 1)}))
    (folder / "status.json").write_text(json.dumps({"status": "completed", "stage": "bon", "error": None}))


def test_overoptimization_summary_of_a_sweep_folder_reports_peaks_and_their_growth_with_proxy_size(tmp_path):
    """Best-of-n jobs of two proxies (1e4 and 1e6 params), 3 replicates: the small proxy's gold peaks at n = 4
    (gain 1 + 0.1 r) and falls to 0.2 at n = 256, the large one's at n = 64 (gain 2 + 0.1 r). `summary --runs`
    (the user's command) reports each peak, its sqrt KL, the fall after it, and slopes vs ln(params) of
    (2 - 1) / ln 100 for the peak gain and (d(64) - d(4)) / ln 100 for its sqrt KL, exactly (zero width)."""
    import math

    d = lambda n: math.sqrt(math.log(n) - (n - 1) / n)  # noqa: E731
    for r in range(3):
        small = [0.0, 0.5, 1.0 + 0.1 * r, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2]
        large = [0.0, 0.3, 0.6, 1.0, 1.4, 1.8, 2.0 + 0.1 * r, 1.9, 1.9]
        _write_bon_run(tmp_path / f"xs_{r}", "tiny-xs", 1e4, r, small)
        _write_bon_run(tmp_path / f"s_{r}", "tiny-s", 1e6, r, large)
    rows = world_probe.overoptimization_rows(str(tmp_path))
    assert sorted((r["proxy"], r["replicate"]) for r in rows) == [(p, r) for p in ("tiny-s", "tiny-xs") for r in range(3)]
    xs0 = next(r for r in rows if r["proxy"] == "tiny-xs" and r["replicate"] == 0)
    assert xs0["peak_gain"] == pytest.approx(1.0) and xs0["peak_d"] == pytest.approx(d(4))
    assert xs0["end_gain"] == pytest.approx(0.2) and xs0["end_d"] == pytest.approx(d(256))
    assert xs0["proxy_end_gain"] == pytest.approx(0.7 * d(256))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "world_probe.py"), "summary", "--runs", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "bon, 3840 comparisons, K = 4" in text
    assert f"| tiny-xs | 10000 | 3 | {d(4):.2f}, {d(4):.2f}, {d(4):.2f} | 1.100 [" in text
    assert "| 0.900 [" in text  # the small proxy's fall from its mean peak 1.1 to 0.2
    slope_gain, slope_d = 1 / math.log(100), (d(64) - d(4)) / math.log(100)
    assert (f"slope of the peak gold gain {slope_gain:.3f} [{slope_gain:.3f}, {slope_gain:.3f}], of sqrt KL at the peak "
            f"{slope_d:.3f} [{slope_d:.3f}, {slope_d:.3f}]") in text
    # another K is another table; a second job of one (proxy, replicate, K) is an error, not a silent overwrite
    _write_bon_run(tmp_path / "s_0_k2", "tiny-s", 1e6, 0, [0.0, 0.5, 0.7, 0.2], k=2)
    text = world_probe.summarise_overoptimization(world_probe.overoptimization_rows(str(tmp_path)))
    assert "bon, 3840 comparisons, K = 2" in text and f"| tiny-s | 1000000 | 1 | {d(4):.2f} | 0.700 [" in text
    _write_bon_run(tmp_path / "s_0_again", "tiny-s", 1e6, 0, [0.0, 0.1], k=2)
    with pytest.raises(ValueError, match="s_0_again and s_0_k2 are both bon against tiny-s at 3840 comparisons, K = 2"):
        world_probe.summarise_overoptimization(world_probe.overoptimization_rows(str(tmp_path)))


def _write_rm_run(folder: Path, seed: int, selection: list, held_out: list, accuracy: list) -> None:
    """An RM job's run folder with a validation split: evaluations every 100 steps of the validation loss,
    the held-out loss and the held-out accuracy."""
    folder.mkdir(parents=True)
    config = {"experiment": "world", "replicate": seed, "seed": 0, "stage": {"name": "rm"},
              "rm": {"name": "tiny-s", "source": "tiny"}, "rm_train": {"seed": seed},
              "data": {"comparison_budget": 3840, "responses_per_prompt": 4, "n_val_prompts": 8},
              "tracking": {"mode": "disabled"}}
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "metrics.jsonl", "w") as fh:
        for i, (v, h, a) in enumerate(zip(selection, held_out, accuracy)):
            fh.write(json.dumps({"_step": i, "rm/step": 100 * (i + 1), "rm/member": 0, "rm/selection_loss": v,
                                 "rm/val_loss": h, "rm/val_accuracy": a}) + "\n")
    (folder / "summary.json").write_text(json.dumps({"rm/val_accuracy": accuracy[0]}))
    (folder / "status.json").write_text(json.dumps({"status": "completed", "stage": "rm", "error": None}))


def test_selection_summary_compares_the_validation_choice_with_the_held_out_one(tmp_path):
    """Two RMs: the validation loss is lowest at step 100 in both, the held-out loss at step 300 (seed 0) and
    step 100 (seed 1); `summary --runs` gives each choice's step and held-out accuracy, and the mean of
    (held-out choice − validation choice) = ((0.84 − 0.80) + 0) / 2 = +0.02."""
    _write_rm_run(tmp_path / "rm0", 0, [0.40, 0.45, 0.50], [0.50, 0.49, 0.48], [0.80, 0.82, 0.84])
    _write_rm_run(tmp_path / "rm1", 1, [0.40, 0.45, 0.50], [0.40, 0.49, 0.48], [0.81, 0.82, 0.84])
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "world_probe.py"), "summary", "--runs", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tiny-s | 3840 | 4 | 0 | 100 | 0.8000 | 300 | 0.8400 |" in proc.stdout
    assert "| tiny-s | 3840 | 4 | 1 | 100 | 0.8100 | 100 | 0.8100 |" in proc.stdout
    assert "held-out choice minus validation choice over 2 RMs: +0.0200 [" in proc.stdout


def test_diversity_summary_pairs_replicates_across_k():
    """K = 2 and K = 4 at one budget over 3 replicates: accuracy 0.75 + 0.01 r vs 0.72 + 0.01 r (paired
    difference exactly +0.03 in each), peak gains 2.4 vs 2.0 + 0.1 r; replicate 2 of K = 4 has no best-of-n
    job, so the gain is paired over the 2 replicates that have both (differences 0.4, 0.3: mean +0.35)."""
    rm = [{"mode": "rm", "model": "tiny-s", "n": 4200, "K": k, "seed": r, "non_embedding": 1,
           "hist": [[0, base + 0.01 * r]]} for k, base in ((2, 0.75), (4, 0.72)) for r in range(3)]
    bon = [{"kind": "bon", "proxy": "tiny-s", "comparisons": 4200, "K": 2, "replicate": r, "peak_gain": 2.4} for r in range(3)]
    bon += [{"kind": "bon", "proxy": "tiny-s", "comparisons": 4200, "K": 4, "replicate": r, "peak_gain": 2.0 + 0.1 * r}
            for r in range(2)]
    text = world_probe.summarise_diversity(rm, bon)
    assert "diversity: tiny-s, 4200 comparisons" in text
    assert "| 2 | 3 | 0.750, 0.760, 0.770 | +0.7600 [" in text
    assert ("K = 2 minus K = 4, paired over 3 replicates: accuracy +0.0300 [+0.0300, +0.0300], "
            "peak gold gain +0.3500 [") in text and "(2 replicates)" in text
