"""Checkpoints: atomic replacement, no arbitrary unpickling from disk, a full disk fails loudly and
keeps the previous checkpoint, NaN/inf weights are never written."""

import errno
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import rlhf_scaling.checkpoint as ckpt_module
from rlhf_scaling.checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint


class Evil:
    def __reduce__(self):
        return (print, ("executed code from a checkpoint",))


def test_round_trip_and_missing(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "ckpt", model, {"step": 7, "lr": [0.1]})
    other = torch.nn.Linear(3, 2)
    state = load_checkpoint(tmp_path / "ckpt", other)
    assert state["step"] == 7
    torch.testing.assert_close(other.weight, model.weight)
    assert load_checkpoint(tmp_path / "none", other) is None


def test_a_kill_between_renames_falls_back_to_the_previous_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "ckpt", model, {"step": 1})
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")  # as if killed after moving the old one aside
    assert load_checkpoint(tmp_path / "ckpt", torch.nn.Linear(3, 2))["step"] == 1


def test_pickled_objects_in_trainer_state_are_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "ckpt", model, {"step": 1})
    with open(tmp_path / "ckpt" / "trainer_state.pt", "wb") as fh:
        pickle.dump({"step": Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "ckpt", model)


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ckpt", torch.nn.Linear(3, 2), {"step": 1})
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(tmp_path / "ckpt", torch.nn.Linear(4, 2))


# ----------------------------------------------------------------------------- disk full while checkpointing

def _disk_full():
    """A stand-in writer that writes part of its file, then fails as a full disk does."""
    def writer(obj, dest, *a, **k):
        if hasattr(dest, "write"):
            dest.write(b"partial" * 100)
        else:
            with open(dest, "wb") as fh:
                fh.write(b"partial" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    return writer


def _same_weights(directory, model):
    other = torch.nn.Linear(3, 2)
    state = load_checkpoint(directory, other)
    for a, b in zip(other.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)
    return state


@pytest.mark.parametrize("failing", ["weights", "trainer_state", "done_marker"])
def test_disk_full_mid_write_raises_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failing):
    directory = tmp_path / "ckpt"
    good = torch.nn.Linear(3, 2)
    save_checkpoint(directory, good, {"step": 4})
    newer = torch.nn.Linear(3, 2)
    if failing == "weights":
        monkeypatch.setattr(ckpt_module, "save_file", _disk_full())
    elif failing == "trainer_state":
        monkeypatch.setattr(torch, "save", _disk_full())
    else:
        real = ckpt_module.Path.write_text

        def write_text(self, *a, **k):
            if self.name == "DONE":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, *a, **k)
        monkeypatch.setattr(ckpt_module.Path, "write_text", write_text)

    with pytest.raises(OSError) as err:
        save_checkpoint(directory, newer, {"step": 6})
    # (a) loud and clear: ENOSPC kept, the directory and "disk is full" named, the writer's error as cause
    assert isinstance(err.value, CheckpointWriteError)
    assert err.value.errno == errno.ENOSPC
    assert str(directory) in str(err.value) and "disk is full" in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    # (b), (c) the previous complete checkpoint is what loads; the half-written one is never returned
    assert _same_weights(directory, good) == {"step": 4}
    assert not directory.with_name("ckpt.tmp").exists()  # the partial write was removed (space freed)
    assert not directory.with_name("ckpt.old").exists()
    # (d) once space is back, the next save works and is what loads
    monkeypatch.undo()
    save_checkpoint(directory, newer, {"step": 8})
    assert _same_weights(directory, newer) == {"step": 8}


def test_a_leftover_half_written_temp_folder_is_never_loaded_and_does_not_block_saving(tmp_path):
    """As if the process died mid-write (no chance to clean up): ckpt.tmp holds partial files."""
    directory = tmp_path / "ckpt"
    good = torch.nn.Linear(3, 2)
    save_checkpoint(directory, good, {"step": 4})
    tmp = directory.with_name("ckpt.tmp")
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    (tmp / "DONE").write_text("ok")  # even a marker in the temp folder does not make it a checkpoint
    assert _same_weights(directory, good) == {"step": 4}
    shutil.rmtree(directory)
    assert load_checkpoint(directory, torch.nn.Linear(3, 2)) is None
    newer = torch.nn.Linear(3, 2)
    save_checkpoint(directory, newer, {"step": 5})
    assert _same_weights(directory, newer) == {"step": 5}
    assert not tmp.exists()


def test_non_finite_weights_are_not_checkpointed(tmp_path):
    directory = tmp_path / "ckpt"
    model = torch.nn.Linear(3, 2)
    save_checkpoint(directory, model, {"step": 4})
    good = model.weight.detach().clone()
    with torch.no_grad():
        model.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"ckpt.*bias.*step 6"):
        save_checkpoint(directory, model, {"step": 6})
    other = torch.nn.Linear(3, 2)
    assert load_checkpoint(directory, other) == {"step": 4}
    torch.testing.assert_close(other.weight, good)
    assert not directory.with_name("ckpt.tmp").exists()


_FSIZE_CHILD = textwrap.dedent("""
    import errno, resource, signal, sys
    import torch
    from rlhf_scaling.checkpoint import CheckpointWriteError, save_checkpoint
    directory, limit, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        save_checkpoint(directory, model, {"step": 6, "big": torch.zeros(rows, 1000)})
    except CheckpointWriteError as err:
        assert err.errno == errno.EFBIG, err
        assert directory in str(err), err
        print("RAISED", type(err.__cause__).__name__)
        sys.exit(0)
    print("NO ERROR")
    sys.exit(1)
""")


@pytest.mark.slow  # for `make test-fast`: a child process importing torch per case
@pytest.mark.parametrize("rows", [0, 100], ids=["limit_below_weights", "trainer_state_too_big"])
def test_real_file_size_limit_while_checkpointing(tmp_path, rows):
    """Not mocked: RLIMIT_FSIZE in a child process makes the writer's own writes fail (EFBIG)."""
    directory = tmp_path / "ckpt"
    good = torch.nn.Linear(3, 2)
    save_checkpoint(directory, good, {"step": 4})
    # rows=100: trainer_state is ~400 kB, over the 64 kB limit; the weights file (~100 B) fits.
    # rows=0: a limit of 16 bytes stops the safetensors file itself.
    limit = 64_000 if rows else 16
    child = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(directory), str(limit), str(rows)],
                           capture_output=True, text=True, timeout=120,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert child.returncode == 0, child.stdout + child.stderr[-3000:]
    assert "RAISED " + ("RuntimeError" if rows else "SafetensorError") in child.stdout
    assert _same_weights(directory, good) == {"step": 4}
    assert not directory.with_name("ckpt.tmp").exists()
    newer = torch.nn.Linear(3, 2)
    save_checkpoint(directory, newer, {"step": 8})
    assert _same_weights(directory, newer) == {"step": 8}
