"""Peer comparison: our RM training vs TRL's RewardTrainer on the same model shape, the same
comparisons and the same batch, fp32, CPU, measured in one process (run it in the peer venv of
benchmarks/requirements-peer.txt, never the project's).

    /tmp/bench-venv/bin/python benchmarks/bench_trl_rm.py [--k 2] [--steps 20]
"""

import argparse
import statistics
import time

import torch
from datasets import Dataset
from transformers import GPTNeoXForSequenceClassification, TrainerCallback
from trl import RewardConfig, RewardTrainer

from bench_rm import make_groups, time_training
from rlhf_scaling.cli import compose
from rlhf_scaling.data.rm_batches import encode_groups, expand_pairs
from rlhf_scaling.data.synthetic import build_tokenizer
from rlhf_scaling.models import build_reward_model, tiny_config

torch.set_num_threads(2)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []

    def on_step_begin(self, args, state, control, **kw):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-m")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--comparisons-per-step", type=int, default=96)
    args = parser.parse_args()
    spec = compose([f"model@rm={args.model}", "stage=rm"]).rm
    task, groups = make_groups(args.k, 400)
    tok = build_tokenizer(task)
    pairs = expand_pairs(groups)
    per_group = args.k * (args.k - 1) // 2

    kwise, _ = encode_groups(groups, tok, 16)
    ours_cmp = {}
    for padding_free in (True, False):  # rm_train.padding_free (default true), and the padded forward
        torch.manual_seed(0)
        ours_s, _ = time_training(build_reward_model(spec, tok), kwise, tok.pad_token_id,
                                  max(1, args.comparisons_per_step // per_group), args.steps, padding_free)
        ours_cmp[padding_free] = max(1, args.comparisons_per_step // per_group) * per_group / ours_s

    data = Dataset.from_list([{"prompt": g.prompt, "chosen": " " + g.responses[0], "rejected": " " + g.responses[1]}
                              for g in pairs])
    cfg = tiny_config(spec, len(tok), tok.pad_token_id, tok.eos_token_id)
    cfg.num_labels = 1
    torch.manual_seed(0)
    model = GPTNeoXForSequenceClassification(cfg)
    timer = StepTimer()
    trainer = RewardTrainer(
        model=model, processing_class=tok, train_dataset=data,
        args=RewardConfig(output_dir="/tmp/trl-bench", per_device_train_batch_size=args.comparisons_per_step,
                          max_steps=args.steps + 2, learning_rate=1e-3, logging_steps=10**6, save_strategy="no",
                          report_to=[], use_cpu=True, dataloader_num_workers=0, max_length=64, bf16=False,
                          disable_tqdm=True),
        callbacks=[timer])
    trainer.train()
    trl_s = statistics.median(timer.times[2:])
    trl_cmp = args.comparisons_per_step / trl_s
    import trl

    print(f"K={args.k}, {args.model}, {args.comparisons_per_step} comparisons/step, fp32, trl {trl.__version__}")
    print(f"ours (padding-free): {ours_cmp[True]:.0f} comparisons/s   ours (padded): {ours_cmp[False]:.0f}   "
          f"TRL RewardTrainer: {trl_cmp:.0f} comparisons/s   ratio {ours_cmp[True] / trl_cmp:.2f}x "
          f"(padded {ours_cmp[False] / trl_cmp:.2f}x)")


if __name__ == "__main__":
    main()
