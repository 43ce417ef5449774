"""Resumable training checkpoints: model weights as safetensors, optimizer/scheduler/step as a
weights-only torch file, written atomically so a kill mid-write leaves the previous checkpoint.

Layout of `<dir>/`: model.safetensors, trainer_state.pt, DONE. Exact resume relies on the
stages drawing their batches from generators seeded by (seed, epoch) and on the saved step.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlhf_scaling.models import load_state_strict

_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
         errno.EFBIG: "a file grew past the allowed size"}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous one is kept.
    The error from the writer is its __cause__."""


def _os_errno(err: BaseException) -> Optional[int]:
    """The OS error number behind a writer's failure: an OSError in the exception chain (torch.save
    raises RuntimeError over the file object's OSError), or "os error N" in safetensors' message."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err.errno
        found = re.search(r"os error (\d+)", str(err))
        if found:
            return int(found.group(1))
        err = err.__cause__ or err.__context__
    return None


def _write_failed(directory: Path, tmp: Path, err: BaseException) -> CheckpointWriteError:
    """Remove the half-written temp folder (frees the space it took) and describe the failure."""
    shutil.rmtree(tmp, ignore_errors=True)
    code = _os_errno(err)
    reason = _FULL.get(code) or (os.strerror(code) if code else f"{type(err).__name__}: {err}")
    try:
        free = f"{shutil.disk_usage(directory.parent).free / 2**20:.0f} MiB free there now"
    except OSError:
        free = "free space unknown"
    message = f"could not write checkpoint {directory}: {reason} ({free}); the previous checkpoint is kept"
    return CheckpointWriteError(code, message) if code else CheckpointWriteError(message)


def save_checkpoint(directory: Path, model: torch.nn.Module, trainer_state: dict) -> None:
    """Write `directory` atomically: into a sibling temp dir, then rename over the old one.

    A failed write (disk full, quota, I/O error: OSError from Python, RuntimeError from torch.save,
    SafetensorError) raises CheckpointWriteError naming the directory and, from the errno, the cause;
    the temp dir is removed and the previous checkpoint is left as it was.

    Refuses (FloatingPointError, nothing written) when a weight is NaN/inf: a finite loss can still
    have a non-finite gradient, and the weights it poisons must not replace the last good checkpoint.
    """
    directory = Path(directory)
    for name, param in model.named_parameters():
        if param.is_floating_point() and not torch.isfinite(param.detach()).all():
            raise FloatingPointError(
                f"{directory}: weight {name} is NaN/inf at step {trainer_state.get('step', '?')}; "
                f"not checkpointing it (the previous checkpoint is kept)")
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        with open(tmp / "trainer_state.pt", "wb") as fh:  # a Python file: its OSError (errno) stays in the chain
            torch.save(trainer_state, fh)
        (tmp / "DONE").write_text("ok")
    except (OSError, RuntimeError, SafetensorError) as err:
        raise _write_failed(directory, tmp, err) from err
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


def rng_state() -> dict:
    """This process's RNG streams: CPU, and CUDA where sampling runs on a GPU (resume-exact sampling)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state saved."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
