"""Checkpoints: atomic replacement, and no arbitrary unpickling from disk."""

import pickle

import pytest
import torch

from rlhf_scaling.checkpoint import load_checkpoint, save_checkpoint


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
