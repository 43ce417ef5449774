"""Critic-free methods per iteration: our `ppo` stage as PPO (separate critic), RLOO and GRPO vs TRL's
RLOOTrainer and GRPOTrainer, at equal rollouts on the same model shapes, the same initial weights, the
same proxy RM and the same kinds of prompts, fp32, CPU.

Run it in the peer venv of benchmarks/requirements-peer.txt (trl 1.16.0) with the project installed
into it (`pip install -e .`), never the project's venv:

    /tmp/peer-venv/bin/python benchmarks/bench_trl_rloo_grpo.py --shape tiny-m --iters 3 --rounds 3

--device cuda moves every side to the GPU (ours: device=cuda; TRL: use_cpu=False), still fp32.
--no-peer (or TRL not importable) runs our three sides only and says so; --json writes the summary.

What runs where (as benchmarks/bench_trl_ppo.py). The parent builds the upstream artifacts (SFT policy,
preference data, proxy RM) into a temporary artifacts_dir through the real stage recipes, then starts
one child process per side, one after the other (rounds alternate the order), so each side's peak RSS
is its own:
  ours_ppo / ours_rloo / ours_grpo  `rlhf_scaling.stages.ppo.run` with ppo.algorithm=ppo|rloo|grpo
        (grpo: ppo.kl_estimator=k3, as method=grpo); times from its metrics.jsonl (`ppo/time_*_s`,
        `ppo/rollout_tokens`), iteration wall time from the `_time` of consecutive records.
  trl_rloo / trl_grpo  `trl.RLOOTrainer` / `trl.GRPOTrainer` with the SAME SFT weights as policy (TRL
        loads its reference from the same folder) and the SAME trained proxy RM copied into a
        `GPTNeoXForSequenceClassification` given as the reward function. Iteration wall time is the
        time between the `on_step_end` callbacks that close an iteration (epochs x minibatches
        optimizer steps each); the split comes from timing wrappers around the trainer's
        `_generate` (generation), `_calculate_rewards` (scoring) and `_generate_and_score_completions`
        (the rest of it = experience forwards); training = iteration wall − all of those.
Both sides, every method: PROMPTS prompts x SAMPLES rollouts per iteration (groups of SAMPLES for the
baselines), up to NEW_TOKENS new tokens with EOS stopping, temperature 1 (no top-k/top-p), EPOCHS
passes x MINIBATCHES minibatches (one optimizer step each; default 1 x 1), lr 1e-4 constant, KL
coefficient 0.01 (RLOO: k1 sequence KL as a reward penalty; GRPO: k3 per-token loss term, so both
sides run the reference forward), clip 0.2, grad-norm clip 1.0, no gradient checkpointing, no
evaluation, no sample logging, torch threads = 2. Medians over the iterations after the first WARMUP
of each side. What cannot be matched is listed in benchmarks/RESULTS.md with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_trl_ppo import SHAPES, _cls_config, ours_timings, peak_rss_mb, prepare, rss_mb, summarise

OURS = {"ours_ppo": "ppo", "ours_rloo": "rloo", "ours_grpo": "grpo"}
PEERS = {"trl_rloo": "rloo", "trl_grpo": "grpo"}


def overrides(args, algorithm: str = "ppo") -> list[str]:
    shape = [f"{role}.{kv}" for role in ("policy", "rm") for kv in SHAPES[args.shape]]
    tag = args.shape.replace("pythia-", "")
    name = [] if args.shape == "tiny-m" else [f"policy.name=tiny-{tag}-shape", f"rm.name=tiny-{tag}-shape"]
    n_rollouts = args.prompts * args.samples
    return [
        f"artifacts_dir={args.store / 'artifacts'}", "stage=ppo", "progress=false", f"device={args.device}",
        "task=synthetic",  # the topics world (69-token vocabulary), where RESULTS.md's figures were measured
        "model@policy=tiny-m", "model@rm=tiny-m", *shape, *name,
        f"task.max_response_tokens={args.new_tokens}",
        # Upstream artifacts: as bench_trl_ppo.py (enough SFT for tiny-m to end responses with EOS).
        f"sft.steps={args.sft_steps}", "sft.n_demos=2000", "data.responses_per_prompt=4",
        f"data.comparison_budget={args.comparisons}", "data.n_eval_prompts=16", "rm_train.epochs=1",
        "rm_train.batch_size=8", "rm_train.eval_every=1000", "rm_train.checkpoint_every=100000",
        # The measured iteration, the same for every method.
        f"ppo.algorithm={algorithm}", *(["ppo.kl_estimator=k3"] if algorithm == "grpo" else []),
        f"ppo.steps={args.warmup + args.iters}", f"ppo.prompts_per_step={args.prompts}",
        f"ppo.samples_per_prompt={args.samples}", f"ppo.minibatch_size={n_rollouts // args.minibatches}",
        f"ppo.ppo_epochs={args.epochs}", "ppo.temperature=1.0", "ppo.checkpoint_every=100000", "ppo.lr=1e-4",
        "ppo.kl_coef=0.01", "ppo.eval_prompts=0",
    ]


# ----------------------------------------------------------------------------- our side


def run_ours(args) -> dict:
    return ours_timings(args, overrides(args, OURS[args.role]))


# ----------------------------------------------------------------------------- TRL's side


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import GPTNeoXForSequenceClassification, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlhf_scaling.cli import compose
    from rlhf_scaling.models import load_policy, load_reward_model
    from rlhf_scaling.stages.common import policy_init_path, rm_artifact, setup_task
    from rlhf_scaling.stages.ppo import rollout_prompts

    torch.set_num_threads(args.threads)
    base_rss = rss_mb()
    algorithm = PEERS[args.role]
    cfg = compose(overrides(args, algorithm))
    setup = setup_task(cfg)
    tok = setup.tokenizer
    n_steps = args.warmup + args.iters
    # The same prompts our stage draws in its iterations 0 .. n_steps-1 (TRL's sampler shuffles them and
    # repeats each num_generations times). Plain-text prompts: TRL decodes the completions and scores
    # prompt + completion as text, so the prompt carries the separating space our tokenizer drops.
    prompts = [q for step in range(n_steps) for q in rollout_prompts(setup, step, args.prompts, cfg.seed + cfg.ppo.seed)]
    dataset = Dataset.from_dict({"prompt": [q.rstrip() + " " for q in prompts]})

    torch.manual_seed(0)
    init = policy_init_path(cfg)
    policy = load_policy(init)  # TRL builds its reference from policy.config._name_or_path (the same folder)
    ours_rm = load_reward_model(rm_artifact(cfg).path / "member_0")
    rm_cfg = _cls_config(ours_rm.backbone.config)
    rm_cfg.pad_token_id = tok.pad_token_id  # the classifier scores the last non-pad token of each row
    reward = GPTNeoXForSequenceClassification(rm_cfg)
    reward.gpt_neox.load_state_dict(ours_rm.backbone.state_dict())
    with torch.no_grad():
        reward.score.weight.copy_(ours_rm.head.weight)
    reward.eval()

    n_rollouts = args.prompts * args.samples
    common = dict(
        output_dir=str(args.store / f"{args.role}_out"), per_device_train_batch_size=n_rollouts // args.minibatches,
        gradient_accumulation_steps=1, steps_per_generation=args.minibatches, num_generations=args.samples,
        num_iterations=args.epochs, max_steps=n_steps * args.epochs * args.minibatches,
        max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0, learning_rate=1e-4,
        lr_scheduler_type="constant", warmup_steps=0, beta=0.01, epsilon=0.2, max_grad_norm=1.0,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=args.device == "cpu", report_to=[],
        save_strategy="no", logging_steps=10**6, disable_tqdm=True, log_completions=False, seed=0,
        dataloader_num_workers=0,
    )
    if algorithm == "rloo":  # ours: raw leave-one-out advantages, no batch normalisation
        trainer_cls, trl_args = RLOOTrainer, RLOOConfig(**common, normalize_advantages=False)
    else:  # ours: (r − group mean) / (group sample std + 1e-4), TRL's scale_rewards="group"
        trainer_cls, trl_args = GRPOTrainer, GRPOConfig(**common, scale_rewards="group")

    clock = PhaseClock(steps_per_iteration=args.epochs * args.minibatches)
    trainer = trainer_cls(model=policy, reward_funcs=reward, args=trl_args, train_dataset=dataset,
                          processing_class=tok, reward_processing_classes=tok, callbacks=[clock.callback(TrainerCallback)])
    clock.wrap(trainer, "_generate", "generate")
    clock.wrap(trainer, "_calculate_rewards", "score")
    clock.wrap(trainer, "_generate_and_score_completions", "experience")
    trainer.train()
    iters = clock.iterations[args.warmup:]
    return {"iters": iters, "base_rss_mb": base_rss, "peak_rss_mb": peak_rss_mb()}


class PhaseClock:
    """Time spent inside wrapped trainer methods per phase, rollout tokens, and iteration boundaries."""

    def __init__(self, steps_per_iteration: int):
        self.steps_per_iteration, self.steps = steps_per_iteration, 0
        self.iterations, self.spent, self.tokens = [], {}, 0
        self.last_end = time.perf_counter()

    def wrap(self, obj, name, phase):
        fn = getattr(obj, name)

        def timed(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            self.spent[phase] = self.spent.get(phase, 0.0) + time.perf_counter() - start
            if phase == "experience":  # completion tokens through the first EOS (TRL's completion_mask)
                self.tokens += int(out["completion_mask"].sum())
            return out

        setattr(obj, name, timed)

    def callback(self, base):
        clock = self

        class StepEnd(base):
            def on_train_begin(self, args, state, control, **kw):
                clock.last_end = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                clock.steps += 1
                if clock.steps % clock.steps_per_iteration:
                    return
                now = time.perf_counter()
                wall = now - clock.last_end
                gen, score = clock.spent.get("generate", 0.0), clock.spent.get("score", 0.0)
                exp = clock.spent.get("experience", 0.0)
                clock.iterations.append({"wall": wall, "generate": gen, "score": score, "forward": exp - gen - score,
                                         "train": wall - exp, "tokens": clock.tokens})
                clock.spent, clock.tokens, clock.last_end = {}, 0, now

        return StepEnd()


# ----------------------------------------------------------------------------- parent


def child(role: str, args) -> dict:
    cmd = [sys.executable, __file__, "--role", role, "--store", str(args.store), *args.passthrough]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:  # recorded; the other sides still run (a peer that breaks must not hide ours)
        print(f"{role} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}", flush=True)
        return {"error": f"{role} exited {out.returncode}: {out.stderr.strip()[-400:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratios(res: dict) -> dict:
    """Same-run speed ratios (iterations/s, i.e. the inverse ratio of s/iteration) where both sides ran."""
    ok = lambda role: role in res and "error" not in res[role]  # noqa: E731
    pairs = {"ours_rloo_vs_trl_rloo": ("trl_rloo", "ours_rloo"), "ours_grpo_vs_trl_grpo": ("trl_grpo", "ours_grpo"),
             "ours_rloo_vs_ours_ppo": ("ours_ppo", "ours_rloo"), "ours_grpo_vs_ours_ppo": ("ours_ppo", "ours_grpo"),
             "trl_rloo_vs_ours_ppo": ("ours_ppo", "trl_rloo"), "trl_grpo_vs_ours_ppo": ("ours_ppo", "trl_grpo")}
    return {name: res[slow]["wall"] / res[fast]["wall"] for name, (slow, fast) in pairs.items() if ok(slow) and ok(fast)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny-m")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts per iteration")
    parser.add_argument("--samples", type=int, default=4, help="rollouts per prompt (the group size)")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--minibatches", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per side per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="child runs per side, order alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--comparisons", type=int, default=192)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-peer", action="store_true", help="time our sides only (no TRL)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--role", choices=["main", "prepare", *OURS, *PEERS], default="main")
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    argv = sys.argv[1:]
    if "--json" in argv:  # the children get every option but the parent's output file
        del argv[argv.index("--json"):argv.index("--json") + 2]
    args.passthrough = [a for a in argv if not a.startswith("--json=")]
    if args.role != "main":
        out = prepare(args, overrides(args)) if args.role == "prepare" else run_ours(args) if args.role in OURS else run_trl(args)
        if out is not None:
            print(json.dumps(out))
        return

    import torch
    import transformers

    peer = None if args.no_peer else _trl_version()
    args.store = Path(tempfile.mkdtemp(prefix="bench_rloo_grpo_"))
    print(f"{args.shape}: {args.prompts} prompts x {args.samples} rollouts x <= {args.new_tokens} new tokens, "
          f"{args.epochs} epoch(s) x {args.minibatches} minibatch(es), fp32, {args.threads} threads, {args.device}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}, trl {peer or 'NOT RUN'}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--role", "prepare", "--store", str(args.store), *args.passthrough],
                   check=True)
    print(f"upstream artifacts: {time.perf_counter() - start:.0f} s", flush=True)
    roles = (*OURS, *(PEERS if peer else ()))
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
        res[role]["round_medians"] = [statistics.median(i["wall"] for i in x["iters"]) for x in rs]
        if role in OURS:
            res[role]["flops"] = statistics.median(i["flops"] for i in merged["iters"])
    print(f"\nmedian over {args.iters * args.rounds} iterations per side after {args.warmup} warm-up; "
          f"load {os.getloadavg()[0]:.2f}")
    print("| side | s / iteration (per-round medians) | rollout tokens / iteration | rollout tokens/s | generate s | "
          "score s | experience forwards s | train s | peak RSS MiB (after imports) |")
    print("|---|---|---|---|---|---|---|---|---|")
    labels = {"ours_ppo": "ours, ppo (separate critic)", "ours_rloo": "ours, rloo", "ours_grpo": "ours, grpo",
              "trl_rloo": f"TRL {peer} RLOOTrainer", "trl_grpo": f"TRL {peer} GRPOTrainer"}
    for role, label in labels.items():
        if role not in res or "error" in res[role]:
            continue
        m = res[role]
        rounds = ", ".join(f"{w:.3f}" for w in m["round_medians"])
        print(f"| {label} | {m['wall']:.3f} ({rounds}) | {m['tokens']:.0f} | {m['tokens_per_s']:.0f} | "
              f"{m['generate']:.3f} | {m['score']:.3f} | {m['forward']:.3f} | {m['train']:.3f} | "
              f"{m['peak_rss_mb']:.0f} ({m['base_rss_mb']:.0f}) |")
    summary = {"shape": args.shape, "device": args.device, "prompts": args.prompts, "samples": args.samples,
               "new_tokens": args.new_tokens, "epochs": args.epochs, "minibatches": args.minibatches,
               "peer": f"trl {peer}" if peer else "NOT RUN (" + ("--no-peer" if args.no_peer else "trl not importable") + ")",
               "sides": res, "ratios_iterations_per_s": ratios(res)}
    print()
    for name, value in summary["ratios_iterations_per_s"].items():
        print(f"{name.replace('_vs_', ' vs ').replace('_', ' ')}: {value:.2f}x iterations/s")
    for role in ("ours_rloo", "ours_grpo"):
        if "flops" in res.get(role, {}) and "flops" in res.get("ours_ppo", {}):
            print(f"{role.replace('_', ' ')} vs ours ppo: {res[role]['flops'] / res['ours_ppo']['flops']:.2f}x counted "
                  f"FLOPs per iteration ({res[role]['tokens']:.0f} vs {res['ours_ppo']['tokens']:.0f} rollout tokens)")
    if not peer:
        print("TRL (the peer) was NOT run: " + ("--no-peer" if args.no_peer else "trl is not importable here"))
    for role, err in errors.items():
        print(f"{role} FAILED: {err}")
    print(json.dumps(res))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


def _trl_version():
    """TRL's version if a TRL with RLOOTrainer and GRPOTrainer imports here, else None (peer not run)."""
    try:
        import trl
        from trl import GRPOTrainer, RLOOTrainer  # noqa: F401
    except ImportError:
        return None
    return trl.__version__


if __name__ == "__main__":
    main()
