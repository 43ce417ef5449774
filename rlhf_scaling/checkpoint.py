"""Resumable training checkpoints: model weights as safetensors, optimizer/scheduler/step as a
weights-only torch file, written atomically so a kill mid-write leaves the previous checkpoint.

Layout of `<dir>/`: model.safetensors, trainer_state.pt, DONE. Exact resume relies on the
stages drawing their batches from generators seeded by (seed, epoch) and on the saved step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from rlhf_scaling.models import load_state_strict


def save_checkpoint(directory: Path, model: torch.nn.Module, trainer_state: dict) -> None:
    """Write `directory` atomically: into a sibling temp dir, then rename over the old one."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    torch.save(trainer_state, tmp / "trainer_state.pt")
    (tmp / "DONE").write_text("ok")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path, model: torch.nn.Module) -> Optional[dict]:
    """Load weights into `model` and return the trainer state, or None when no complete checkpoint exists.

    Falls back to `<dir>.old` if a kill landed between the two renames of save_checkpoint.
    """
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "DONE").is_file():
            load_state_strict(model, load_file(str(candidate / "model.safetensors")), str(candidate))
            # weights_only: never unpickle arbitrary objects from disk.
            return torch.load(candidate / "trainer_state.pt", weights_only=True)
    return None
