"""Cheap diagnosis of the feature world (task.world=features; docs/world.md, issue 14), outside the stages.

Two measurements on comparisons of two fresh demonstrations per prompt (the SFT policy's samples
are close to demonstrations), labelled by FeatureGold (ties dropped), 5,000 (probe) or 2,000 (rm)
held-out pairs from another seed:

- `probe`: the right-hypothesis learner, r = x'Ax + u'Bx + c·[one-hot length, repeats] on the centred
  presences x (response) and u (prompt) the gold is built from, fitted by logistic loss (Adam, 400
  full-batch steps, L2 in {1e-4, 1e-3, 1e-2}, best on the held-out pairs: an optimistic ceiling).
  `--rank r` restricts A and B to rank r. Says how much of gold the data allow a learner to find.
- `rm`: tiny GPT-NeoX RMs (the tiny family's shapes, rlhf_scaling/models.py) trained on the same
  pairs with the Bradley-Terry loss, AdamW at a constant lr, batch `--bs` pairs, gradient clip 1,
  `--steps` steps, held-out accuracy and loss at `--evals` (default 6) evenly spaced steps.

- `summary FILE... [--runs SWEEP_DIR...]`: the tables of docs/world.md from rm runs' JSON lines, or from
  the RM jobs of sweep folders (`rlhf-scaling -m +sweep=world`): accuracy per model and per data size,
  with intervals over seeds, slopes, spans and the error power law; and, for the best-of-n and PPO jobs
  of those folders, Gao's overoptimization table per proxy (peak gold gain, sqrt KL at the peak, the fall
  after it, the proxy's gain) with its slopes vs ln(proxy params); and, for RMs trained with a validation split
  (data.n_val_prompts), the held-out accuracy of the weights it chose vs of those the held-out loss would have.

One JSON line per result. Usage (docs/world.md has every command run):
  PYTHONPATH=$PWD nice -n 15 .venv/bin/python benchmarks/world_probe.py probe --n 2000 8000 30000
  PYTHONPATH=$PWD nice -n 15 .venv/bin/python benchmarks/world_probe.py rm --vocab 16 --n-features 200 \
      --models xs s m --seeds 0 1 2 --steps 800
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from omegaconf import OmegaConf

from rlhf_scaling.data import feature_world as FW
from rlhf_scaling.data.synthetic import build_tokenizer
from rlhf_scaling.gold import FeatureGold
from rlhf_scaling.models import build_reward_model

SHAPES = {"xs": (1, 16, 2), "s": (2, 32, 2), "m": (2, 64, 4), "l": (4, 128, 4), "xl": (6, 192, 6)}  # conf/model/tiny-*.yaml


class TeacherGold:
    """Gold = a frozen, randomly initialised tiny RM (Gao et al.'s design with a random teacher):
    .score(prompts, responses) -> (B,) its rewards. init_range: the backbone's initializer_range
    (transformers' default 0.02 makes a nearly linear function of the words; larger is more nonlinear)."""

    def __init__(self, tokenizer, shape: str, init_range: float, seed: int = 4321):
        torch.manual_seed(seed)
        n_layer, d, heads = SHAPES[shape]
        spec = OmegaConf.create({"source": "tiny", "n_layer": n_layer, "d_model": d, "n_head": heads, "max_position": 128})
        model = build_reward_model(spec, tokenizer)
        with torch.no_grad():
            for name, w in model.backbone.named_parameters():
                if w.dim() == 2:
                    w.normal_(0.0, init_range)
        self.model, self.tokenizer = model.eval(), tokenizer

    @torch.no_grad()
    def score(self, prompts, responses) -> torch.Tensor:
        ids, mask = encode(self.tokenizer, prompts, responses)
        return torch.cat([self.model(ids[i:i + 1000], mask[i:i + 1000]) for i in range(0, len(prompts), 1000)])


def labelled_pairs(task, gold, n: int, seed: int):
    """(prompts, chosen, rejected): n prompts with two demonstrations each, gold ties dropped."""
    rng = random.Random(seed)
    prompts = FW.sample_prompts(task, n, rng)
    a = [FW.sample_demonstration(task, rng) for _ in prompts]
    b = [FW.sample_demonstration(task, rng) for _ in prompts]
    ga, gb = gold.score(prompts, a), gold.score(prompts, b)
    keep = [i for i in range(n) if ga[i] != gb[i]]
    win = [a[i] if ga[i] > gb[i] else b[i] for i in keep]
    lose = [b[i] if ga[i] > gb[i] else a[i] for i in keep]
    return [prompts[i] for i in keep], win, lose


def presences(task, prompts, responses):
    """(x (B, R), u (B, P), extra (B, 19)): centred presences and one-hot length (0..17) + repeats."""
    x = FW.centred_presence(responses, task.response_words)
    u = FW.centred_presence(prompts, task.prompt_words)
    words = [r.split() for r in responses]
    length = torch.nn.functional.one_hot(torch.tensor([min(len(w), 17) for w in words]), 18).float()
    repeats = torch.tensor([len(w) - len(set(w)) for w in words]).float()[:, None]
    return x, u, torch.cat([length, repeats], 1)


def probe_accuracy(task, train, test, rank: int, seed: int = 0, steps: int = 400, l2s=(1e-4, 1e-3, 1e-2)) -> float:
    """Held-out pair accuracy of the bilinear learner (full rank if rank == 0): `steps` full-batch Adam
    steps per L2 strength in `l2s`, the best of them."""
    fw, fl = presences(task, train[0], train[1]), presences(task, train[0], train[2])
    tw, tl = presences(task, test[0], test[1]), presences(task, test[0], test[2])
    R, P = len(task.response_words), len(task.prompt_words)
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for l2 in l2s:
        if rank:
            factors = [(torch.randn(n, rank, generator=g) * 0.1).requires_grad_() for n in (R, R, P, R)]
            mats = lambda f=factors: (f[0] @ f[1].T, f[2] @ f[3].T)
        else:
            factors = [torch.zeros(R, R, requires_grad=True), torch.zeros(P, R, requires_grad=True)]
            mats = lambda f=factors: (f[0], f[1])
        c = torch.zeros(19, requires_grad=True)

        def reward(x, u, e):
            A, B = mats()
            return ((x @ A) * x).sum(1) + ((u @ B) * x).sum(1) + e @ c

        opt = torch.optim.Adam([*factors, c], lr=0.03)
        for _ in range(steps):
            loss = torch.nn.functional.softplus(reward(*fl) - reward(*fw)).mean() + l2 * sum((f ** 2).sum() for f in factors)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            best = max(best, (reward(*tw) > reward(*tl)).float().mean().item())
    return best


def encode(tokenizer, prompts, responses):
    """(ids, mask) right-padded: prompt words, response words, EOS (the RM stage's text layout)."""
    seqs = [tokenizer(p + " " + r)["input_ids"] + [tokenizer.eos_token_id] for p, r in zip(prompts, responses)]
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    return ids, mask


def train_rm(tokenizer, shape, train, test, *, steps: int, lr: float, batch: int, seed: int, evals: int = 6,
             val=None, eval_every: int = 0, patience: int = 0, min_steps: int = 0):
    """(history, total params, s per step) of one tiny RM. history: [(step, test accuracy, test loss)] at
    `evals` evenly spaced steps; with `val` (pairs of their own seed) and `patience` > 0 it is evaluated
    every `eval_every` steps instead, [(step, test accuracy, test loss, val loss)], and training stops once
    the val loss has not improved for `patience` evaluations (not before `min_steps`): `steps` is then a cap.
    Choosing the step on `val`, not on `test`, keeps the reported test accuracy unbiased."""
    torch.manual_seed(seed)
    n_layer, d, heads = SHAPES[shape]
    spec = OmegaConf.create({"source": "tiny", "n_layer": n_layer, "d_model": d, "n_head": heads, "max_position": 128})
    model = build_reward_model(spec, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    win, lose = encode(tokenizer, train[0], train[1]), encode(tokenizer, train[0], train[2])
    twin, tlose = encode(tokenizer, test[0], test[1]), encode(tokenizer, test[0], test[2])

    sets = [(twin, tlose, len(test[0]))]
    if val is not None and patience:
        sets.append((encode(tokenizer, val[0], val[1]), encode(tokenizer, val[0], val[2]), len(val[0])))

    @torch.no_grad()
    def evaluate():
        """(test accuracy, test loss[, val loss])"""
        model.eval()
        out = []
        for w, l, n in sets:
            rw = torch.cat([model(w[0][i:i + 500], w[1][i:i + 500]) for i in range(0, n, 500)])
            rl = torch.cat([model(l[0][i:i + 500], l[1][i:i + 500]) for i in range(0, n, 500)])
            if not out:
                out.append(round((rw > rl).float().mean().item(), 4))
            out.append(round(torch.nn.functional.softplus(rl - rw).mean().item(), 4))
        model.train()
        return tuple(out)

    every = eval_every if len(sets) > 1 else max(1, steps // evals)
    history, best, start = [], (float("inf"), 0), time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(train[0]), (batch,), generator=g)
        loss = torch.nn.functional.softplus(model(lose[0][idx], lose[1][idx]) - model(win[0][idx], win[1][idx])).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % every == 0:
            history.append((step, *evaluate()))
            if len(sets) > 1:
                best = min(best, (history[-1][3], step))
                if step >= min_steps and step - best[1] >= patience * every:
                    break
    return history, sum(p.numel() for p in model.parameters()), (time.time() - start) / step


def accuracy(row: dict) -> float:
    """An rm row's held-out (test) accuracy: at its lowest validation loss with --patience, else at its last step."""
    return row["best"][1] if "best" in row else row["hist"][-1][1]


def rows_from_runs(folder: str) -> list:
    """rm rows (as `rm` prints them) from the RM jobs of a sweep folder, read with the framework's own
    analysis loaders (analysis.figures.load_runs, rm_runs): model = config.rm.name, non_embedding = the
    RM's counted rm/n_params (all parameters: the tiny family shares one vocabulary, so ordering and
    slopes in ln are the same up to a shift), n = comparisons trained on, seed = rm_train.seed (= replicate in sweeps),
    accuracy = rm/val_accuracy (of the kept, early-stopped weights)."""
    from rlhf_scaling.analysis.figures import RM_ACCURACY, load_runs, rm_runs

    runs = rm_runs(load_runs(folder))
    needed = [RM_ACCURACY, "n_params", "comparisons"]
    if any(c not in runs for c in needed):  # no RM job here (e.g. a folder of best-of-n jobs alone)
        return []
    runs = runs.dropna(subset=needed)
    return [{"mode": "rm", "model": str(r["config.rm.name"]), "non_embedding": int(r["n_params"]), "n": int(r["comparisons"]),
             "K": int(r["config.data.responses_per_prompt"]), "seed": int(r["config.rm_train.seed"]),
             "hist": [[0, float(r[RM_ACCURACY])]]} for _, r in runs.iterrows()]


def interval(spec: str, v) -> str:
    """A (mean, low, high) triple as "mean [low, high]", each with the format spec (".4f", "+.4f")."""
    return f"{v[0]:{spec}} [{v[1]:{spec}}, {v[2]:{spec}}]"


def summarise(rows: list) -> str:
    """Markdown tables of rm rows (several seeds each), with Student-t 95% intervals over seeds
    (curves.mean_interval): accuracy per model (x = non-embedding params) and per data size n, and,
    per seed then over seeds, the slope of accuracy vs ln(x), the span first -> last and, over n, the
    exponent b of the error power law 1 - acc = a n^-b (curves.fit_power_law)."""
    import numpy as np

    from rlhf_scaling import curves

    out = []
    for axis, other in (("model", "n"), ("n", "model")):
        for fixed in sorted({r[other] for r in rows}):
            group = [r for r in rows if r[other] == fixed]
            keys = sorted({r[axis] for r in group}, key=lambda k: min(r["non_embedding"] if axis == "model" else r["n"]
                                                                     for r in group if r[axis] == k))
            if len(keys) < 2:
                continue
            seeds = sorted({r["seed"] for r in group})
            acc = {}
            for r in group:  # one run per (point, seed): a second (another lr, schedule, ...) would silently replace it
                if (r[axis], r["seed"]) in acc:
                    raise ValueError(f"two rm runs of {axis} {r[axis]}, {other} {fixed}, seed {r['seed']}: they differ in a "
                                     "setting this table does not separate; summarise them separately")
                acc[(r[axis], r["seed"])] = accuracy(r)
            x = {k: next(r["non_embedding"] if axis == "model" else r["n"] for r in group if r[axis] == k) for k in keys}
            out.append(f"\n{axis} varies, {other} = {fixed}\n\n| {axis} | x | " + " | ".join(f"seed {s}" for s in seeds)
                       + " | mean [95% t] |\n|---|---|" + "---|" * (len(seeds) + 1))
            for k in keys:
                vals = [acc.get((k, s), float("nan")) for s in seeds]
                out.append(f"| {k} | {x[k]} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {interval('.4f', curves.mean_interval(vals))} |")
            full = [s for s in seeds if all((k, s) in acc for k in keys)]
            if not full:  # no seed has every point of this axis: the table only
                continue
            ys = {s: np.array([acc[(k, s)] for k in keys]) for s in full}
            xs = np.array([x[k] for k in keys], dtype=float)
            slopes = [curves.fit_log_linear(xs, ys[s])[0] for s in full]
            out.append(f"\nseeds with every {axis}: {len(full)}; slope of accuracy vs ln x {interval('.4f', curves.mean_interval(slopes))}; "
                       f"span {keys[0]} -> {keys[-1]} {interval('.4f', curves.mean_interval([ys[s][-1] - ys[s][0] for s in full]))}; "
                       f"monotonic in {sum(bool(np.all(np.diff(ys[s]) > 0)) for s in full)} of {len(full)} seeds")
            if axis == "n":
                b = [curves.fit_power_law(xs, 1 - ys[s]).b for s in full]
                law, floor = curves.fit_power_law_select(xs, 1 - np.mean([ys[s] for s in full], 0))
                out.append(f"error 1 - acc = a n^-b per seed: b {interval('.4f', curves.mean_interval(b))}; on the seed mean "
                           f"(AICc choice of a floor): a {law.a:.4g}, b {law.b:.4g}, floor {law.c:.4g} ({'used' if floor else 'not used'})")
    return "\n".join(out)


def overoptimization_rows(folder: str) -> list:
    """One row per best-of-n or PPO job of a sweep folder, from the curves the framework's figures and claims
    use (analysis.figures.overoptimization_curves: best-of-n over n, PPO's held-out evaluations; gains over
    n = 1 / iteration 0): kind, proxy (config.rm.name), params (the proxy's counted parameters), comparisons,
    K (responses per prompt), replicate, run_id,
    peak_gain and peak_d (the largest gold gain and its sqrt KL), end_gain and end_d (at the largest sqrt KL
    reached), proxy_end_gain (the proxy's gain there)."""
    from rlhf_scaling.analysis.figures import load_runs, overoptimization_curves
    from rlhf_scaling.analysis.runs import per_run

    df = load_runs(folder)
    facts = per_run(df).set_index("run_id")
    rows = []
    for kind in ("bon", "ppo"):
        c = overoptimization_curves(df, kind)
        for run_id, r in (c.groupby("run_id", sort=True) if not c.empty else []):
            r = r.dropna(subset=["sqrt_kl", "gold_gain"]).sort_values("sqrt_kl", kind="stable")
            if len(r) < 2:
                continue
            d, g, p = (r[k].to_numpy(float) for k in ("sqrt_kl", "gold_gain", "proxy_gain"))
            at, f = int(g.argmax()), facts.loc[run_id]
            rows.append({"kind": kind, "proxy": str(f["config.rm.name"]), "params": float(r["n_params"].iloc[0]),
                         "comparisons": int(f["config.data.comparison_budget"]), "replicate": int(f["config.replicate"]),
                         "K": int(f["config.data.responses_per_prompt"]), "run_id": run_id,
                         "peak_gain": float(g[at]), "peak_d": float(d[at]), "end_gain": float(g[-1]), "end_d": float(d[-1]),
                         "proxy_end_gain": float(p[-1])})
    return rows


def summarise_overoptimization(rows: list) -> str:
    """Markdown tables of overoptimization rows, one per (kind, comparisons, K): per proxy the replicates'
    peak positions and Student-t 95% intervals over replicates (curves.mean_interval) of the peak gold gain,
    the sqrt KL at the peak, the fall from the peak to the largest sqrt KL reached and the proxy's gain there;
    then, over replicates with every proxy, the slopes of peak gain and of sqrt KL at the peak vs ln(params)
    (Gao et al.'s "larger proxies peak higher and later")."""
    import numpy as np

    from rlhf_scaling import curves

    out = []
    for kind, budget, k_resp in sorted({(r["kind"], r["comparisons"], r["K"]) for r in rows}):
        group = [r for r in rows if (r["kind"], r["comparisons"], r["K"]) == (kind, budget, k_resp)]
        proxies = sorted({r["proxy"] for r in group}, key=lambda k: min(r["params"] for r in group if r["proxy"] == k))
        reps = sorted({r["replicate"] for r in group})
        by = {}
        for r in group:  # one job per (proxy, replicate) in a table: two would be silently averaged or dropped
            other = by.setdefault((r["proxy"], r["replicate"]), r)
            if other is not r:
                raise ValueError(f"{other['run_id']} and {r['run_id']} are both {kind} against {r['proxy']} at {budget} "
                                 f"comparisons, K = {k_resp}, replicate {r['replicate']}: they differ in a setting this "
                                 "table does not separate; summarise them from separate folders")
        out.append(f"\n{kind}, {budget} comparisons, K = {k_resp}\n\n| proxy | params | replicates | sqrt KL at the peak per replicate | "
                   "peak gold gain | sqrt KL at the peak | fall after the peak | proxy gain at the end |\n|---|---|---|---|---|---|---|---|")
        for k in proxies:
            rs = [by[(k, s)] for s in reps if (k, s) in by]
            v = {f: curves.mean_interval([r[f] for r in rs]) for f in ("peak_gain", "peak_d", "proxy_end_gain")}
            fall = curves.mean_interval([r["peak_gain"] - r["end_gain"] for r in rs])
            out.append(f"| {k} | {rs[0]['params']:.0f} | {len(rs)} | " + ", ".join(f"{r['peak_d']:.2f}" for r in rs)
                       + f" | {interval('.3f', v['peak_gain'])} | {interval('.3f', v['peak_d'])} | {interval('.3f', fall)} | {interval('.3f', v['proxy_end_gain'])} |")
        full = [s for s in reps if all((k, s) in by for k in proxies)]
        if len(proxies) >= 2 and full:
            x = np.log([by[(k, full[0])]["params"] for k in proxies])
            slopes = {f: [float(np.polyfit(x, [by[(k, s)][f] for k in proxies], 1)[0]) for s in full]
                      for f in ("peak_gain", "peak_d")}
            out.append(f"\nreplicates with every proxy: {len(full)}; per ln(params): slope of the peak gold gain "
                       f"{interval('.3f', curves.mean_interval(slopes['peak_gain']))}, of sqrt KL at the peak {interval('.3f', curves.mean_interval(slopes['peak_d']))}")
    return "\n".join(out)


def summarise_diversity(rm_rows: list, bon_rows: list) -> str:
    """Markdown tables of the diversity axis (K responses per prompt at one comparison budget), from the rm rows
    (rows_from_runs) and best-of-n overoptimization rows of sweep folders: per (model, budget) with two or more
    K, each K's RM held-out accuracy and peak best-of-n gold gain per replicate with Student-t 95% intervals, then
    the paired differences between consecutive K (smaller K minus larger) over the replicates both have."""
    from rlhf_scaling import curves

    acc = {(r["model"], r["n"], r["K"], r["seed"]): accuracy(r) for r in rm_rows if "K" in r}
    gain = {(r["proxy"], r["comparisons"], r["K"], r["replicate"]): r["peak_gain"] for r in bon_rows if r["kind"] == "bon"}
    out = []
    for model, budget in sorted({k[:2] for k in acc}):
        ks = sorted({k[2] for k in acc if k[:2] == (model, budget)})
        if len(ks) < 2:
            continue
        out.append(f"\ndiversity: {model}, {budget} comparisons\n\n| K | replicates | RM accuracy per replicate | mean [95% t] | "
                   "peak best-of-n gold gain per replicate | mean [95% t] |\n|---|---|---|---|---|---|")
        for k in ks:
            reps = sorted(s for (m, n, kk, s) in acc if (m, n, kk) == (model, budget, k))
            a = [acc[(model, budget, k, s)] for s in reps]
            g = [gain[(model, budget, k, s)] for s in reps if (model, budget, k, s) in gain]
            out.append(f"| {k} | {len(reps)} | {', '.join(f'{v:.3f}' for v in a)} | {interval('+.4f', curves.mean_interval(a))} | "
                       f"{', '.join(f'{v:.3f}' for v in g)} | {interval('+.4f', curves.mean_interval(g)) if g else '-'} |")
        for k1, k2 in zip(ks, ks[1:]):
            both = [s for (m, n, kk, s) in acc if (m, n, kk) == (model, budget, k1) and (model, budget, k2, s) in acc]
            da = [acc[(model, budget, k1, s)] - acc[(model, budget, k2, s)] for s in both]
            dg = [gain[(model, budget, k1, s)] - gain[(model, budget, k2, s)] for s in both
                  if (model, budget, k1, s) in gain and (model, budget, k2, s) in gain]
            out.append(f"\nK = {k1} minus K = {k2}, paired over {len(both)} replicates: accuracy {interval('+.4f', curves.mean_interval(da))}"
                       + (f", peak gold gain {interval('+.4f', curves.mean_interval(dg))} ({len(dg)} replicates)" if dg else ""))
    return "\n".join(out)


def selection_rows(folder: str) -> list:
    """One row per RM trained with a validation split (data.n_val_prompts; its logged rm/selection_loss) in a
    sweep folder's jobs: model, comparisons, seed (rm_train.seed), run_id, kept_step and kept_acc (the held-out
    accuracy at the lowest validation loss: the weights early stopping keeps), and eval_step and eval_acc (the
    same at the lowest held-out loss among the evaluations it ran: the weights selecting on the reported set
    would have kept)."""
    from rlhf_scaling.analysis.figures import load_runs
    from rlhf_scaling.analysis.runs import per_run

    df = load_runs(folder)
    if "rm/selection_loss" not in df:
        return []
    facts = per_run(df).set_index("run_id")
    evals = df.dropna(subset=["rm/selection_loss", "rm/val_loss", "rm/val_accuracy"])
    rows = []
    for (run_id, _), r in evals.groupby(["run_id", "rm/member"], sort=True):  # an ensemble's members apart
        kept, chosen_on_eval = r.loc[r["rm/selection_loss"].idxmin()], r.loc[r["rm/val_loss"].idxmin()]
        f = facts.loc[run_id]
        rows.append({"model": str(f["config.rm.name"]), "comparisons": int(f["config.data.comparison_budget"]),
                     "K": int(f["config.data.responses_per_prompt"]), "seed": int(f["config.rm_train.seed"]), "run_id": run_id,
                     "kept_step": int(kept["rm/step"]), "kept_acc": float(kept["rm/val_accuracy"]),
                     "eval_step": int(chosen_on_eval["rm/step"]), "eval_acc": float(chosen_on_eval["rm/val_accuracy"])})
    return rows


def summarise_selection(rows: list) -> str:
    """Markdown table of selection rows: per RM the step and held-out accuracy that the validation loss chose
    and that the held-out loss would have, and over all RMs the mean difference (held-out choice minus
    validation choice: how optimistic choosing the weights on the reported set is) with its 95% t-interval."""
    from rlhf_scaling import curves

    if not rows:
        return ""
    out = ["\nweights chosen on the validation split vs on the held-out set\n\n| model | comparisons | K | seed | kept step "
           "(validation) | held-out accuracy | step of the lowest held-out loss | held-out accuracy there |\n|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["comparisons"], r["K"], r["model"], r["seed"])):
        out.append(f"| {r['model']} | {r['comparisons']} | {r['K']} | {r['seed']} | {r['kept_step']} | {r['kept_acc']:.4f} | "
                   f"{r['eval_step']} | {r['eval_acc']:.4f} |")
    m, lo, hi = curves.mean_interval([r["eval_acc"] - r["kept_acc"] for r in rows])
    out.append(f"\nheld-out choice minus validation choice over {len(rows)} RMs: {m:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["probe", "rm", "summary"])
    p.add_argument("files", nargs="*", help="summary: JSON-lines files of rm runs")
    p.add_argument("--runs", nargs="+", default=[], help="summary: sweep folders of RM jobs (e.g. +sweep=world)")
    p.add_argument("--n", type=int, nargs="+", default=[2000, 8000, 30000], help="training pairs (before ties)")
    p.add_argument("--vocab", type=int, default=64, help="task.prompt_vocab = task.response_vocab")
    p.add_argument("--n-features", type=int, default=2000)
    p.add_argument("--zipf", type=float, default=0.8)
    p.add_argument("--rank", type=int, nargs="+", default=[0], help="probe: rank of A and B (0: full)")
    p.add_argument("--models", nargs="+", default=["xs"], choices=list(SHAPES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="rm: init and batch-order seeds (data fixed)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--evals", type=int, default=6, help="rm: held-out evaluations, evenly spaced")
    p.add_argument("--test-pairs", type=int, default=None)
    p.add_argument("--patience", type=int, default=0,
                   help="rm: stop when the loss on 2,000 validation pairs (own seed) has not improved for this many evaluations")
    p.add_argument("--eval-every", type=int, default=200, help="rm, with --patience: steps between evaluations")
    p.add_argument("--min-steps", type=int, default=0, help="rm, with --patience: never stop before this step")
    p.add_argument("--teacher", default=None, choices=list(SHAPES), help="gold = a frozen random RM of this shape")
    p.add_argument("--teacher-init", type=float, default=0.02, help="the teacher's weight init std")
    a = p.parse_args(argv)
    if a.mode == "summary":
        rows = [json.loads(line) for f in a.files for line in open(f) if line.startswith("{")]
        rows += [r for folder in a.runs for r in rows_from_runs(folder)]
        bon_rows = [r for folder in a.runs for r in overoptimization_rows(folder)]
        print(summarise([r for r in rows if r.get("mode") == "rm"]))
        print(summarise_overoptimization(bon_rows))
        print(summarise_diversity([r for r in rows if r.get("mode") == "rm"], bon_rows))
        print(summarise_selection([r for folder in a.runs for r in selection_rows(folder)]))
        return
    task = FW.make_feature_task(prompt_vocab=a.vocab, response_vocab=a.vocab, prompt_length=4, n_features=a.n_features,
                                zipf_exponent=a.zipf, natural_length=8, max_response_tokens=16)
    tokenizer = build_tokenizer(task)
    gold = TeacherGold(tokenizer, a.teacher, a.teacher_init) if a.teacher else FeatureGold(task)
    world = {"vocab": a.vocab, "n_features": a.n_features, "zipf": a.zipf, "teacher": a.teacher,
             "teacher_init": a.teacher_init if a.teacher else None}
    test = labelled_pairs(task, gold, a.test_pairs or (5000 if a.mode == "probe" else 2000), seed=999)
    val = labelled_pairs(task, gold, 2000, seed=998) if a.patience else None
    for n in a.n:
        train = labelled_pairs(task, gold, n, seed=100)
        if a.mode == "probe":
            for rank in a.rank:
                start = time.time()
                acc = probe_accuracy(task, train, test, rank)
                print(json.dumps({**world, "mode": "probe", "n": n, "rank": rank, "acc": round(acc, 4),
                                  "s": round(time.time() - start, 1)}), flush=True)
            continue
        for shape in a.models:
            for seed in a.seeds:
                hist, params, sps = train_rm(tokenizer, shape, train, test, steps=a.steps, lr=a.lr, batch=a.bs, seed=seed,
                                              evals=a.evals, val=val, eval_every=a.eval_every, patience=a.patience,
                                              min_steps=a.min_steps)
                non_embedding = params - len(tokenizer) * SHAPES[shape][1]
                print(json.dumps({**world, "mode": "rm", "model": shape, "non_embedding": non_embedding, "n": n,
                                  "seed": seed, "lr": a.lr, "steps": a.steps, "hist": hist, "s_per_step": round(sps, 3),
                                  **({"best": min(hist, key=lambda h: h[3])} if a.patience else {})}),
                      flush=True)


if __name__ == "__main__":
    main()
