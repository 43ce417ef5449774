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


def train_rm(tokenizer, shape, train, test, *, steps: int, lr: float, batch: int, seed: int, evals: int = 6):
    """(history [(step, held-out accuracy, held-out loss)] at `evals` evenly spaced steps, total params,
    s per step) of one tiny RM."""
    torch.manual_seed(seed)
    n_layer, d, heads = SHAPES[shape]
    spec = OmegaConf.create({"source": "tiny", "n_layer": n_layer, "d_model": d, "n_head": heads, "max_position": 128})
    model = build_reward_model(spec, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    win, lose = encode(tokenizer, train[0], train[1]), encode(tokenizer, train[0], train[2])
    twin, tlose = encode(tokenizer, test[0], test[1]), encode(tokenizer, test[0], test[2])

    @torch.no_grad()
    def evaluate():
        model.eval()
        rw = torch.cat([model(twin[0][i:i + 500], twin[1][i:i + 500]) for i in range(0, len(test[0]), 500)])
        rl = torch.cat([model(tlose[0][i:i + 500], tlose[1][i:i + 500]) for i in range(0, len(test[0]), 500)])
        model.train()
        return round((rw > rl).float().mean().item(), 4), round(torch.nn.functional.softplus(rl - rw).mean().item(), 4)

    history, start = [], time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(train[0]), (batch,), generator=g)
        loss = torch.nn.functional.softplus(model(lose[0][idx], lose[1][idx]) - model(win[0][idx], win[1][idx])).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, steps // evals) == 0:
            history.append((step, *evaluate()))
    return history, sum(p.numel() for p in model.parameters()), (time.time() - start) / steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["probe", "rm"])
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
    p.add_argument("--teacher", default=None, choices=list(SHAPES), help="gold = a frozen random RM of this shape")
    p.add_argument("--teacher-init", type=float, default=0.02, help="the teacher's weight init std")
    a = p.parse_args(argv)
    task = FW.make_feature_task(prompt_vocab=a.vocab, response_vocab=a.vocab, prompt_length=4, n_features=a.n_features,
                                zipf_exponent=a.zipf, natural_length=8, max_response_tokens=16)
    tokenizer = build_tokenizer(task)
    gold = TeacherGold(tokenizer, a.teacher, a.teacher_init) if a.teacher else FeatureGold(task)
    world = {"vocab": a.vocab, "n_features": a.n_features, "zipf": a.zipf, "teacher": a.teacher,
             "teacher_init": a.teacher_init if a.teacher else None}
    test = labelled_pairs(task, gold, a.test_pairs or (5000 if a.mode == "probe" else 2000), seed=999)
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
                                              evals=a.evals)
                non_embedding = params - len(tokenizer) * SHAPES[shape][1]
                print(json.dumps({**world, "mode": "rm", "model": shape, "non_embedding": non_embedding, "n": n,
                                  "seed": seed, "lr": a.lr, "steps": a.steps, "hist": hist, "s_per_step": round(sps, 3)}),
                      flush=True)


if __name__ == "__main__":
    main()
