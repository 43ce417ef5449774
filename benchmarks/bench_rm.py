"""RM training throughput, two modes, each measured in one run.

Default: our K-wise path (one forward per response, all C(K,2) pairs from it) against the same model
trained on the expanded pairs (two forwards per comparison, what a pairwise trainer such as TRL's
RewardTrainer does with K-wise data), fp32, CPU.

    .venv/bin/python benchmarks/bench_rm.py [--model tiny-m] [--steps 20] [--repeats 3]

--mfu SHAPES: step time, tokens/s and model-FLOPs utilisation of a training step at Pythia shapes
(benchmarks/shapes.py, random init, no download), ours (RewardModel + group_loss under the stage's
autocast, packed as rm_train.padding_free=true, and padded) against a plain Hugging Face loop
(GPTNeoXForSequenceClassification, Bradley-Terry loss on its pooled logits) on the SAME sequences,
batch and optimizer (AdamW, fp32 master weights, clipping at 1.0), one after the other in one process:

    python benchmarks/bench_rm.py --mfu pythia-410m,pythia-1.4b --device cuda --dtype bf16 --json rm.json

FLOPs per step (stated in the output): 6·N·T (Kaplan et al. 2020: forward + backward, N non-embedding
parameters, T real tokens of the step), and, as a second figure, 6·N·T + 12·n_layer·d_model·Σ L_i²
(PaLM's attention term, Chowdhery et al. 2022 App. B, over each sequence's real length L_i). MFU =
model FLOP/s / the GPU's datasheet bf16 dense peak, and / a measured bf16 matmul (shapes.measured_peak).
"""

import argparse
import json
import random
import statistics
import time

import torch

from rlhf_scaling.cli import compose
from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.data.rm_batches import EncodedGroup, collate, encode_groups, expand_pairs
from rlhf_scaling.data.synthetic import build_tokenizer, make_task, sample_demonstrations
from rlhf_scaling.models import RewardModel, build_reward_model, count_parameters, tiny_config
from rlhf_scaling.stages.rm import group_loss
from rlhf_scaling.training import autocast
from shapes import PYTHIA_VOCAB, datasheet_peak, measured_peak, spec, sync


def make_groups(k: int, n_prompts: int, seed: int = 0):
    task = make_task(8, 6, 6, 16)
    rng = random.Random(seed)
    groups = []
    for i in range(n_prompts):
        prompts, demos = sample_demonstrations(task, k, seed=seed * 100_000 + i)
        responses = tuple(f"{d} {j}" if d else f"the {j}" for j, d in enumerate(demos))  # distinct
        order = list(range(k))
        rng.shuffle(order)
        pairs = tuple((order[a], order[b]) for a in range(k) for b in range(a + 1, k))
        groups.append(PreferenceGroup(prompts[0], responses, pairs))
    return task, groups


def time_training(model, units, pad_id, batch_size, steps, padding_free: bool = True):
    """Median seconds per optimizer step (collate + forward + backward + AdamW) and forward tokens
    per step, over `steps` steps after two warm-up steps (the median resists a busy machine).
    padding_free: the forward packs the batch (rm_train.padding_free, the stage's default)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times, tokens = [], []
    for step in range(steps + 2):
        start = time.perf_counter()
        part = [units[(step * batch_size + i) % len(units)] for i in range(batch_size)]
        batch = collate(part, pad_id)
        loss = group_loss(model, batch, use_margin=False, padding_free=padding_free)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
            tokens.append(int(batch.attention_mask.sum()))
    return statistics.median(times), statistics.mean(tokens)


# ----------------------------------------------------------------------------- --mfu: Pythia shapes, ours vs plain HF


def random_groups(n_groups: int, seq_len: int, vocab: int, seed: int = 0):
    """n_groups K=2 groups (one pair each) of random token sequences, lengths uniform in
    [seq_len/2, seq_len], ids in [1, vocab) so the pad id 0 never occurs inside a sequence."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for _ in range(n_groups):
        lengths = torch.randint(seq_len // 2, seq_len + 1, (2,), generator=gen).tolist()
        seqs = [torch.randint(1, vocab, (n,), generator=gen).tolist() for n in lengths]
        groups.append(EncodedGroup(seqs, [(0, 1)], None, None))
    return groups


def median_step_s(step, steps: int, warmup: int, device) -> float:
    """Median wall seconds of `step()` over `steps` calls after `warmup` untimed ones, each interval
    closed by a device synchronisation."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_side(name: str, build, make_step, *, steps: int, warmup: int, device, flops: dict, peaks: dict) -> dict:
    """Build a model, time its training step, free it; a failure (say, out of memory) is recorded."""
    model = None
    try:
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with torch.device(device):  # weights initialised where they live (a 1.4B init on CPU takes long)
            torch.manual_seed(0)
            model = build()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)  # as the stage: torch AdamW, fp32 master weights
        step_s = median_step_s(make_step(model, opt), steps, warmup, device)
    except Exception as err:  # noqa: BLE001 -- recorded in the report, the other sides still run
        return {"side": name, "error": f"{type(err).__name__}: {err}"[:500]}
    finally:
        del model
    out = {"side": name, "step_s": step_s, "tokens_per_s": flops["tokens"] / step_s,
           "model_tflops": flops["6NT"] / step_s / 1e12, "model_tflops_attn": flops["6NT+attn"] / step_s / 1e12}
    for peak_name, peak in peaks.items():
        out[f"mfu_{peak_name}"] = flops["6NT"] / step_s / peak if peak else None
        out[f"mfu_attn_{peak_name}"] = flops["6NT+attn"] / step_s / peak if peak else None
    if torch.device(device).type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def mfu_shape(shape: str, args, peaks: dict) -> dict:
    """Ours (packed and padded) and the plain HF loop on one shape; same sequences and batch."""
    from transformers import GPTNeoXForSequenceClassification, GPTNeoXModel

    device, precision = torch.device(args.device), args.dtype
    cfg = tiny_config(spec(shape, args.seq_len), args.vocab, pad_token_id=0, eos_token_id=0)
    batch = collate(random_groups(args.prompts_per_step, args.seq_len, args.vocab), pad_id=0).to(device)
    lengths = batch.attention_mask.sum(1).double()
    with torch.device("meta"):
        n_params = count_parameters(RewardModel(GPTNeoXModel(cfg)))  # non-embedding (Kaplan et al.)
    tokens = float(lengths.sum())
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * float((lengths**2).sum())
    flops = {"tokens": tokens, "6NT": 6 * n_params * tokens, "6NT+attn": 6 * n_params * tokens + attn}

    def ours(padding_free):
        def make_step(model, opt):
            def step():  # rlhf_scaling.stages.rm.train_member's one-process step
                with autocast(precision, device):
                    loss = group_loss(model, batch, use_margin=False, padding_free=padding_free)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            return step
        return make_step

    def hf_step(model, opt):
        def step():  # the textbook loop: pooled logits of chosen (even rows) and rejected (odd rows)
            with autocast(precision, device):
                r = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1).float()
            loss = -torch.nn.functional.logsigmoid(r[0::2] - r[1::2]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    cls_cfg = tiny_config(spec(shape, args.seq_len), args.vocab, pad_token_id=0, eos_token_id=0)
    cls_cfg.num_labels = 1
    common = dict(steps=args.steps, warmup=args.warmup, device=device, flops=flops, peaks=peaks)
    sides = [
        measure_side("ours", lambda: RewardModel(GPTNeoXModel(cfg)), ours(True), **common),
        measure_side("ours_padded", lambda: RewardModel(GPTNeoXModel(cfg)), ours(False), **common),
        measure_side("hf_loop", lambda: GPTNeoXForSequenceClassification(cls_cfg), hf_step, **common),
    ]
    return {"shape": shape, "n_params_non_embedding": n_params, "sequences": int(lengths.numel()),
            "seq_len_max": args.seq_len, "tokens_per_step": tokens, "padded_tokens_per_step": float(batch.attention_mask.numel()),
            "flops_6NT": flops["6NT"], "flops_6NT_attn": flops["6NT+attn"], "sides": sides}


def mfu_main(args) -> dict:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = {"datasheet": datasheet_peak(name), "measured": measured_peak(device, n=args.matmul_n)}
    print(f"RM training step, {args.dtype} autocast, AdamW fp32 master weights, on {name}; "
          f"{args.prompts_per_step} pairs/step, lengths U[{args.seq_len // 2}, {args.seq_len}], vocab {args.vocab}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"peaks: datasheet {peaks['datasheet'] and peaks['datasheet'] / 1e12} TFLOP/s, "
          f"measured matmul {peaks['measured'] / 1e12:.1f} TFLOP/s")
    print("FLOPs/step = 6*N*T (N non-embedding params, T real tokens); +attn adds 12*n_layer*d_model*sum(L_i^2)")
    print("| shape | side | s/step | tokens/s | model TFLOP/s | MFU (datasheet) | MFU (measured) | MFU+attn (datasheet) | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    shapes = []
    for shape in args.mfu.split(","):
        res = mfu_shape(shape, args, peaks)
        shapes.append(res)
        for s in res["sides"]:
            if "error" in s:
                print(f"| {shape} | {s['side']} | error: {s['error'][:120]} |")
                continue
            f = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
            print(f"| {shape} | {s['side']} | {s['step_s']:.4f} | {s['tokens_per_s']:.0f} | {s['model_tflops']:.1f} | "
                  f"{f(s['mfu_datasheet'])} | {f(s['mfu_measured'])} | {f(s['mfu_attn_datasheet'])} | "
                  f"{s.get('peak_memory_gib', float('nan')):.1f} |", flush=True)
    return {"device": name, "dtype": args.dtype, "peak_flops": peaks, "steps": args.steps, "warmup": args.warmup,
            "flops_formula": "6*N*T, N non-embedding parameters, T real tokens per step; "
                             "attn variant adds 12*n_layer*d_model*sum_i L_i^2 (PaLM)",
            "shapes": shapes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--comparisons-per-step", type=int, default=96)
    parser.add_argument("--mfu", default=None, help="comma-separated shapes of benchmarks/shapes.py: MFU mode")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16", help="--mfu: autocast precision")
    parser.add_argument("--seq-len", type=int, default=1024, help="--mfu: longest sequence (lengths U[L/2, L])")
    parser.add_argument("--prompts-per-step", type=int, default=16, help="--mfu: K=2 groups (pairs) per step")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=PYTHIA_VOCAB, help="--mfu: embedding rows")
    parser.add_argument("--matmul-n", type=int, default=8192, help="--mfu: size of the measured-peak matmul")
    parser.add_argument("--json", default=None, help="--mfu: also write the figures here")
    args = parser.parse_args()
    if args.mfu:
        res = mfu_main(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    torch.set_num_threads(2)  # the CPU ratios of RESULTS.md
    spec = compose([f"model@rm={args.model}", "stage=rm"]).rm
    print(f"model {args.model}; {args.comparisons_per_step} comparisons per optimizer step; fp32; "
          f"{torch.get_num_threads()} threads")
    print(f"{'K':>3} {'ours cmp/s':>11} {'pairs cmp/s':>12} {'speed-up':>9} {'fwd tok/cmp ours':>17} {'pairs':>7} {'ratio':>6}")
    for k in (2, 4, 8):
        task, groups = make_groups(k, 400)
        tok = build_tokenizer(task)
        kwise, _ = encode_groups(groups, tok, 16)
        pairs, _ = encode_groups(expand_pairs(groups), tok, 16)
        per_group = k * (k - 1) // 2
        ours_t, pair_t = [], []
        for rep in range(args.repeats):
            torch.manual_seed(rep)
            t, ours_tok = time_training(build_reward_model(spec, tok), kwise, tok.pad_token_id,
                                        max(1, args.comparisons_per_step // per_group), args.steps)
            ours_t.append(t)
            torch.manual_seed(rep)
            t, pair_tok = time_training(build_reward_model(spec, tok), pairs, tok.pad_token_id,
                                        args.comparisons_per_step, args.steps)
            pair_t.append(t)
        comparisons_ours = max(1, args.comparisons_per_step // per_group) * per_group
        ours = comparisons_ours / statistics.median(ours_t)
        base = args.comparisons_per_step / statistics.median(pair_t)
        print(f"{k:>3} {ours:>11.0f} {base:>12.0f} {ours / base:>8.2f}x {ours_tok / comparisons_ours:>17.1f} "
              f"{pair_tok / args.comparisons_per_step:>7.1f} {pair_tok / args.comparisons_per_step / (ours_tok / comparisons_ours):>5.2f}x")


if __name__ == "__main__":
    main()
