"""A user's own inputs, made the way a user would: local model directories written with
save_pretrained (tiny random GPT-NeoX models and a tokenizer) and a preference JSONL file.

The tokenizer is the synthetic task's word-level one, so the tiny models read the file's text
(the same construction as tests/test_models.py and tests/stages/test_pipeline.py use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rlhf_scaling.data.synthetic import build_tokenizer, make_task, sample_demonstrations
from rlhf_scaling.gold import SyntheticGold
from rlhf_scaling.models import build_policy, tiny_config

TASK = make_task(8, 6, 6, 16)
TINY = OmegaConf.create({"name": "t", "source": "tiny", "n_layer": 1, "d_model": 16, "n_head": 2,
                         "max_position": 64, "name_or_path": None, "revision": None, "trust_remote_code": False})


def save_model_dir(directory: Path, *, seed: int = 0, kind: str = "causal") -> Path:
    """A local model directory: kind "causal" (a policy; also what a careless gold would be) or
    "scorer" (a sequence-classification RM with one output and its trained head, a proper gold)."""
    from transformers import GPTNeoXForSequenceClassification

    tok = build_tokenizer(TASK)
    torch.manual_seed(seed)
    if kind == "causal":
        model = build_policy(TINY, tok)
    else:
        config = tiny_config(TINY, len(tok), tok.pad_token_id, tok.eos_token_id)
        config.num_labels = 1
        model = GPTNeoXForSequenceClassification(config)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)


def preference_lines(n: int = 200, seed: int = 1) -> list:
    """Pairwise JSONL lines of the synthetic language, labelled by its gold (distinct, untied pairs)."""
    prompts, a = sample_demonstrations(TASK, n, seed=seed)
    _, b = sample_demonstrations(TASK, n, seed=seed + 1)
    gold = SyntheticGold(TASK)
    lines = []
    for p, x, y in zip(prompts, a, b):
        gx, gy = gold.score_one(p, x), gold.score_one(p, y)
        if x != y and gx != gy:
            chosen, rejected = (x, y) if gx > gy else (y, x)
            lines.append(json.dumps({"prompt": p, "chosen": chosen, "rejected": rejected}))
    return lines


def write_lines(path: Path, lines) -> Path:
    Path(path).write_text("".join(line + "\n" for line in lines))
    return Path(path)


def cli(args, cwd: Path, env_extra=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`rlhf-scaling <args>` as the user runs it, in `cwd` (PYTHONPATH and the rest inherited)."""
    exe = Path(sys.executable).with_name("rlhf-scaling")
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cli_together(runs, cwd: Path, env_extra=None, timeout: int = 600) -> list:
    """Several `rlhf-scaling` commands (each an argument list) started together, as a user may run
    them in several terminals; their completed processes, in order. They may share inputs and
    artifacts (built under the artifact locks), not run folders."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda args: cli(args, cwd, env_extra, timeout), runs))
