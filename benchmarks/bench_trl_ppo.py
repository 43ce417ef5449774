"""Peer comparison: one PPO iteration of our `ppo` stage vs one update of TRL's PPOTrainer on the same
model shapes, the same initial weights, the same kind of prompts and the same batch, fp32, CPU.

Run it in the PPO peer venv of benchmarks/requirements-peer-ppo.txt (TRL removed its PPOTrainer in
1.13.0; that file pins 1.12.0, the last release with it), never the project's:

    /tmp/bench-venv-ppo/bin/python benchmarks/bench_trl_ppo.py --shape tiny-m --iters 6
    /tmp/bench-venv-ppo/bin/python benchmarks/bench_trl_ppo.py --shape pythia-160m --iters 3

On a GPU (benchmarks/gpu/run.sh): --device cuda moves both sides to the GPU (ours: device=cuda; TRL:
use_cpu=False), still fp32 on both sides. --no-peer (or TRL not importable) runs our side(s) only and
says so; --json writes the summary.

What runs where. The parent process builds the upstream artifacts our stage needs (SFT policy,
preference data, proxy RM) into a temporary artifacts_dir through the real stage recipes, then
starts one child process per side, one after the other (rounds alternate the order), so each
side's peak RSS is its own ("memory per rank": every side is one process, one rank):
  ours  `rlhf_scaling.stages.ppo.run` on that config; per-iteration times from its metrics.jsonl
        (`ppo/time_generate_s`, `_score_s`, `_forward_s`, `_train_s`, `ppo/rollout_tokens`),
        iteration wall time from the `_time` of consecutive records.
  TRL   `trl.experimental.ppo.PPOTrainer` with the SAME SFT weights as policy and reference, a
        `GPTNeoXForSequenceClassification` value model with the SFT backbone (ours: the critic is
        the SFT backbone + a scalar head) and the SAME trained proxy RM copied into a
        `GPTNeoXForSequenceClassification` (backbone + score head). Its iteration wall time is the
        time between consecutive `on_step_end` callbacks; the split comes from timing wrappers
        around the module-level functions its loop calls (`batch_generation` = generation,
        `get_reward` on the reward model = scoring, everything from the first training forward
        of the update to `on_step_end` = training, the rest = experience forwards).
Both sides: PROMPTS rollouts per iteration (1 sample per prompt), up to NEW_TOKENS new tokens with
EOS stopping, temperature 1, PPO_EPOCHS epochs over MINIBATCHES minibatches (one optimizer step
each), no gradient checkpointing, no eval or sample generations, torch threads = 2. Medians are over
the iterations after the first WARMUP of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shapes import shape_overrides

SHAPES = {  # model@policy / model@rm overrides; the RM has the policy's shape on both sides
    "tiny-m": [],
    # Pythia-160M's / 410M's transformer (benchmarks/shapes.py) on the synthetic task's tokenizer
    # (69 tokens; a 50k vocabulary needs a hub tokenizer, which this benchmark must not download).
    "pythia-160m": shape_overrides("pythia-160m"),
    "pythia-410m": shape_overrides("pythia-410m"),
}


def rss_mb() -> float:
    """Current resident set size of this process (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def overrides(args) -> list[str]:
    shape = [f"{role}.{kv}" for role in ("policy", "rm") for kv in SHAPES[args.shape]]
    tag = args.shape.replace("pythia-", "")
    name = [] if args.shape == "tiny-m" else [f"policy.name=tiny-{tag}-shape", f"rm.name=tiny-{tag}-shape"]
    return [
        f"artifacts_dir={args.store / 'artifacts'}", "stage=ppo", "progress=false", f"device={args.device}",
        "task=synthetic",  # the topics world (69-token vocabulary), where RESULTS.md's figures were measured
        "model@policy=tiny-m", "model@rm=tiny-m", *shape, *name,
        f"task.max_response_tokens={args.new_tokens}",
        # Upstream artifacts: enough SFT for the policy to end responses with EOS (tiny-m); small data and RM.
        f"sft.steps={args.sft_steps}", "sft.n_demos=2000", "data.responses_per_prompt=4",
        f"data.comparison_budget={args.comparisons}", "data.n_eval_prompts=16", "rm_train.epochs=1",
        "rm_train.batch_size=8", "rm_train.eval_every=1000", "rm_train.checkpoint_every=100000",
        # PPO: the measured iteration.
        f"ppo.steps={args.warmup + args.iters}", f"ppo.prompts_per_step={args.prompts}", "ppo.samples_per_prompt=1",
        f"ppo.minibatch_size={args.prompts // args.minibatches}", f"ppo.ppo_epochs={args.epochs}",
        "ppo.temperature=1.0", "ppo.checkpoint_every=100000", "ppo.lr=1e-4", "ppo.kl_coef=0.01",
    ]


# ----------------------------------------------------------------------------- upstream artifacts


def prepare(args, stage_overrides: list[str]) -> None:
    """Build the upstream artifacts (SFT policy, preference data, proxy RM) that `stage_overrides` name,
    through the real stage recipes (shared with bench_trl_rloo_grpo.py, which passes its own overrides)."""
    import torch

    from rlhf_scaling.cli import compose
    from rlhf_scaling.stages import data, rm, sft
    from rlhf_scaling.stages.common import open_tracker

    torch.set_num_threads(args.threads)
    cfg = compose(stage_overrides)
    for name, module in (("sft", sft), ("data", data), ("rm", rm)):
        start = time.perf_counter()
        with open_tracker(cfg, args.store / f"run_{name}", name) as tracker:
            module.run(cfg, tracker)
        print(f"  built {name} in {time.perf_counter() - start:.0f} s", flush=True)


# ----------------------------------------------------------------------------- our side


def ours_timings(args, stage_overrides: list[str]) -> dict:
    """Run our `ppo` stage with `stage_overrides` in a fresh folder under args.store and read its
    iterations back from metrics.jsonl: times (`ppo/time_*_s`, wall from the `_time` of consecutive
    records), rollout tokens and counted FLOPs per iteration after the first args.warmup, and RSS (MiB).
    Shared with bench_trl_rloo_grpo.py, which passes its own overrides."""
    import torch

    from rlhf_scaling.cli import compose
    from rlhf_scaling.stages import ppo
    from rlhf_scaling.stages.common import open_tracker

    torch.set_num_threads(args.threads)
    base_rss = rss_mb()
    cfg = compose(stage_overrides)
    run_dir = Path(tempfile.mkdtemp(dir=args.store, prefix=f"{args.role}_"))
    with open_tracker(cfg, run_dir, "ppo") as tracker:
        ppo.run(cfg, tracker)
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    recs = sorted((r for r in recs if "ppo/time_generate_s" in r), key=lambda r: r["ppo/step"])
    iters = []
    for prev, rec in zip(recs, recs[1:]):
        if rec["ppo/step"] < args.warmup:
            continue
        iters.append({"wall": rec["_time"] - prev["_time"], "generate": rec["ppo/time_generate_s"],
                      "score": rec["ppo/time_score_s"], "forward": rec["ppo/time_forward_s"],
                      "train": rec["ppo/time_train_s"], "tokens": rec["ppo/rollout_tokens"],
                      # counted FLOPs of the iteration (rlhf_scaling/compute.py; the log holds the running total)
                      "flops": rec["ppo/flops"] - prev["ppo/flops"], "generated_width": None})
    return {"iters": iters, "base_rss_mb": base_rss, "peak_rss_mb": peak_rss_mb()}


def run_ours(args) -> dict:
    # ours_padded: the same stage with PPO's forwards over the padded batch (before packing);
    # ours_shared: with the value head on the policy's trunk instead of a separate critic.
    extra = {"ours_padded": ["ppo.padding_free=false"], "ours_shared": ["ppo.critic=shared"]}.get(args.role, [])
    return ours_timings(args, overrides(args) + extra)


# ----------------------------------------------------------------------------- TRL's side


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import GPTNeoXForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    from rlhf_scaling.cli import compose
    from rlhf_scaling.data.encode import encode_texts
    from rlhf_scaling.models import load_policy, load_reward_model
    from rlhf_scaling.stages.common import policy_init_path, rm_artifact, setup_task
    from rlhf_scaling.stages.ppo import rollout_prompts

    torch.set_num_threads(args.threads)
    base_rss = rss_mb()
    cfg = compose(overrides(args))
    setup = setup_task(cfg)
    tok = setup.tokenizer
    tok.padding_side = "left"  # TRL's queries are left-padded (its generate masks pad ids)
    n_steps = args.warmup + args.iters
    # The same prompts our stage draws in its iterations 0 .. n_steps-1 (TRL's loader shuffles them).
    prompts = [q for step in range(n_steps) for q in rollout_prompts(setup, step, args.prompts, cfg.seed + cfg.ppo.seed)]
    dataset = Dataset.from_dict({"input_ids": encode_texts(tok, prompts)})

    torch.manual_seed(0)
    init = policy_init_path(cfg)
    policy, ref = load_policy(init), load_policy(init)
    value = GPTNeoXForSequenceClassification(_cls_config(policy.config))
    value.gpt_neox.load_state_dict(policy.gpt_neox.state_dict())
    ours_rm = load_reward_model(rm_artifact(cfg).path / "member_0")
    reward = GPTNeoXForSequenceClassification(_cls_config(ours_rm.backbone.config))
    reward.gpt_neox.load_state_dict(ours_rm.backbone.state_dict())
    with torch.no_grad():
        reward.score.weight.copy_(ours_rm.head.weight)

    clock = PhaseClock()
    clock.wrap(trl_ppo, "batch_generation", lambda *a, **k: "generate")
    clock.wrap(trl_ppo, "get_reward", lambda model, *a, **k: "score" if model is reward else "forward")
    clock.wrap(trl_ppo, "forward", lambda model, *a, **k: "train" if hasattr(model, "value_model") else "forward")
    clock.count_tokens(tok.eos_token_id, tok.pad_token_id)

    ppo_args = PPOConfig(
        output_dir=str(args.store / "trl_out"), per_device_train_batch_size=args.prompts, gradient_accumulation_steps=1,
        num_mini_batches=args.minibatches, num_ppo_epochs=args.epochs, total_episodes=args.prompts * n_steps,
        local_rollout_forward_batch_size=args.prompts, response_length=args.new_tokens, stop_token="eos",
        temperature=1.0, learning_rate=1e-4, kl_coef=0.01, vf_coef=0.5, cliprange=0.2, cliprange_value=0.2,
        num_sample_generations=0, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=args.device == "cpu",
        report_to=[], save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0, dataloader_num_workers=0,
        lr_scheduler_type="constant",
    )
    trainer = PPOTrainer(args=ppo_args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset, eval_dataset=dataset.select(range(args.prompts)),
                         callbacks=[clock.callback(TrainerCallback)])
    trainer.train()
    iters = clock.iterations[args.warmup:]
    return {"iters": iters, "base_rss_mb": base_rss, "peak_rss_mb": peak_rss_mb()}


def _cls_config(config):
    import copy

    cfg = copy.deepcopy(config)
    cfg.num_labels = 1
    return cfg


class PhaseClock:
    """Accumulates the time spent inside wrapped functions per phase, and iteration boundaries."""

    def __init__(self):
        self.iterations, self.spent, self.tokens, self.width = [], {}, 0, 0
        self.train_start = None
        self.last_end = time.perf_counter()

    def wrap(self, module, name, phase_of):
        fn = getattr(module, name)

        def timed(*a, **k):
            phase = phase_of(*a, **k)
            if phase == "train" and self.train_start is None:
                self.train_start = time.perf_counter()
            start = time.perf_counter()
            out = fn(*a, **k)
            if phase != "train":
                self.spent[phase] = self.spent.get(phase, 0.0) + time.perf_counter() - start
            if name == "batch_generation":
                self._count(out[0], a[1].shape[1])
            return out

        setattr(module, name, timed)

    def count_tokens(self, eos_id, pad_id):
        self.eos_id, self.pad_id = eos_id, pad_id

    def _count(self, query_responses, context_length):
        """Rollout tokens as ours counts them: response tokens through the first EOS."""
        import torch

        r = query_responses[:, context_length:]
        is_eos = r == self.eos_id
        keep = (torch.cumsum(is_eos.long(), 1) - is_eos.long()) == 0
        self.tokens += int(keep.sum())
        self.width = r.shape[1]

    def callback(self, base):
        clock = self

        class StepEnd(base):
            def on_train_begin(self, args, state, control, **kw):
                clock.last_end = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                wall = now - clock.last_end
                train = now - clock.train_start
                gen, score = clock.spent.get("generate", 0.0), clock.spent.get("score", 0.0)
                clock.iterations.append({"wall": wall, "generate": gen, "score": score, "train": train,
                                         "forward": wall - gen - score - train, "tokens": clock.tokens,
                                         "generated_width": clock.width})
                clock.spent, clock.tokens, clock.train_start, clock.last_end = {}, 0, None, now

        return StepEnd()


# ----------------------------------------------------------------------------- parent


def summarise(res: dict) -> dict:
    it = res["iters"]
    med = {k: statistics.median(i[k] for i in it) for k in ("wall", "generate", "score", "forward", "train", "tokens")}
    med["tokens_per_s"] = statistics.median(i["tokens"] / i["wall"] for i in it)
    med["n"] = len(it)
    med["peak_rss_mb"], med["base_rss_mb"] = res["peak_rss_mb"], res["base_rss_mb"]
    return med


def child(role: str, args) -> dict:
    cmd = [sys.executable, __file__, "--role", role, "--store", str(args.store), *args.passthrough]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:  # recorded; the other sides still run (a peer that breaks must not hide ours)
        print(f"{role} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}", flush=True)
        return {"error": f"{role} exited {out.returncode}: {out.stderr.strip()[-400:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny-m")
    parser.add_argument("--prompts", type=int, default=32, help="rollouts per iteration (1 sample per prompt)")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--iters", type=int, default=6, help="timed iterations per side per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="ours/TRL child pairs, order alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--comparisons", type=int, default=192)
    parser.add_argument("--compare-padded", action="store_true",
                        help="also time ours with ppo.padding_free=false (padded forwards) in the same run")
    parser.add_argument("--compare-shared", action="store_true",
                        help="also time ours with ppo.critic=shared (value head on the policy's trunk) in the same run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-peer", action="store_true", help="time our side(s) only (no TRL)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--role", choices=["main", "prepare", "ours", "ours_padded", "ours_shared", "trl"], default="main")
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    argv = sys.argv[1:]
    if "--json" in argv:  # the children get every option but the parent's output file
        del argv[argv.index("--json"):argv.index("--json") + 2]
    args.passthrough = [a for a in argv if not a.startswith("--json=")]
    if args.role != "main":
        fn = {"prepare": lambda a: prepare(a, overrides(a)), "ours": run_ours, "ours_padded": run_ours, "ours_shared": run_ours,
              "trl": run_trl}[args.role]
        out = fn(args)
        if out is not None:
            print(json.dumps(out))
        return

    import torch
    import transformers

    peer = None if args.no_peer else _trl_version()
    args.store = Path(tempfile.mkdtemp(prefix="bench_ppo_"))
    print(f"{args.shape}: {args.prompts} rollouts x <= {args.new_tokens} new tokens, {args.epochs} PPO epochs x "
          f"{args.minibatches} minibatches, fp32, {args.threads} threads, {args.device}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, trl {peer or 'NOT RUN'}; load {os.getloadavg()[0]:.2f}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--role", "prepare", "--store", str(args.store), *args.passthrough],
                   check=True)
    print(f"upstream artifacts: {time.perf_counter() - start:.0f} s", flush=True)
    roles = ("ours", *(("trl",) if peer else ()), *(("ours_padded",) if args.compare_padded else ()),
             *(("ours_shared",) if args.compare_shared else ()))
    runs, errors = {role: [] for role in roles}, {}
    for r in range(args.rounds):
        for role in (roles if r % 2 == 0 else roles[::-1]):
            start = time.perf_counter()
            out = child(role, args)
            if "error" in out:
                errors[role] = out["error"]
                continue
            runs[role].append(out)
            print(f"  round {r} {role}: {time.perf_counter() - start:.0f} s, "
                  f"median wall {summarise(runs[role][-1])['wall']:.3f} s", flush=True)
    res = {role: {"error": err} for role, err in errors.items()}
    for role, rs in runs.items():
        if not rs:
            continue
        merged = {"iters": [i for x in rs for i in x["iters"]], "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                  "base_rss_mb": max(x["base_rss_mb"] for x in rs)}
        res[role] = summarise(merged)
    print(f"\nmedian over {args.iters * args.rounds} iterations per side after {args.warmup} warm-up; load {os.getloadavg()[0]:.2f}")
    print("| side | s / iteration | rollout tokens / iteration | rollout tokens/s | generate s | score s | "
          "experience forwards s | train s | peak RSS MiB (after imports) |")
    print("|---|---|---|---|---|---|---|---|---|")
    labels = {"ours": "ours", "trl": f"TRL {peer} PPOTrainer", "ours_padded": "ours, ppo.padding_free=false",
              "ours_shared": "ours, ppo.critic=shared"}
    for role, label in labels.items():
        if role not in res or "error" in res[role]:
            continue
        m = res[role]
        print(f"| {label} | {m['wall']:.3f} | {m['tokens']:.0f} | {m['tokens_per_s']:.0f} | {m['generate']:.3f} | "
              f"{m['score']:.3f} | {m['forward']:.3f} | {m['train']:.3f} | {m['peak_rss_mb']:.0f} "
              f"({m['base_rss_mb']:.0f}) |")
    summary = {"shape": args.shape, "device": args.device, "rollouts": args.prompts, "new_tokens": args.new_tokens,
               "ppo_epochs": args.epochs, "minibatches": args.minibatches,
               "peer": f"trl {peer}" if peer else "NOT RUN (" + ("--no-peer" if args.no_peer else "trl not importable") + ")",
               "sides": res}
    if peer and not (ok("trl") and ok("ours")):
        print(f"\nno ours vs TRL ratio: a side failed ({res.get('trl', {}).get('error') or res['ours']['error']})")
    elif peer:
        ratio_it = res["trl"]["wall"] / res["ours"]["wall"]
        ratio_tok = res["ours"]["tokens_per_s"] / res["trl"]["tokens_per_s"]
        summary["ours_vs_trl_iterations_per_s"] = ratio_it
        print(f"\nours vs TRL: {ratio_it:.2f}x iterations/s, {ratio_tok:.2f}x rollout tokens/s "
              f"(target >= 1.5x: {'met' if ratio_it >= 1.5 else 'not met'})")
    else:
        print("\nTRL (the peer) was NOT run: " + ("--no-peer" if args.no_peer else "trl is not importable here"))
    ok = lambda role: role in res and "error" not in res[role]  # noqa: E731
    if ok("ours_padded") and ok("ours"):
        print(f"padding-free vs padded forwards (ours): {res['ours_padded']['wall'] / res['ours']['wall']:.2f}x iterations/s")
    if ok("ours_shared") and ok("trl"):
        print(f"ours, ppo.critic=shared vs TRL: {res['trl']['wall'] / res['ours_shared']['wall']:.2f}x iterations/s")
    print(json.dumps(res))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


def _trl_version():
    """TRL's version if a TRL with the experimental PPOTrainer imports here, else None (peer not run)."""
    try:
        import trl
        from trl.experimental.ppo import PPOTrainer  # noqa: F401 -- removed from TRL in 1.13.0
    except ImportError:
        return None
    return trl.__version__


if __name__ == "__main__":
    main()
