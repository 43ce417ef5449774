"""The training seam (rlhf_scaling/training.py) in one process: what a recipe relies on beyond a plain
optimizer step."""

import pytest
import torch
from torch import nn

from rlhf_scaling.training import make_trainer, optimizer_and_schedule


def test_a_cut_of_the_learning_rate_moves_the_very_next_update_and_every_later_one():
    """scale_lr between two steps (as a plateau of RM early stopping does): AdamW on a constant gradient
    moves the weight by exactly the lr it steps with, so the moves show the lr each step used: the one
    right after the cut (set by the schedule's previous step) and the later ones (set from its cut base
    rates) are both cut."""
    weight = nn.Linear(1, 1, bias=False)
    optimizer, schedule = optimizer_and_schedule(weight.parameters(), lr=0.1, weight_decay=0.0, schedule="constant",
                                                 warmup_ratio=0.0, total_steps=10)
    trainer = make_trainer(weight, optimizer, schedule, engine_cfg=None, where="test", max_grad_norm=0.0)
    moves = []
    for step in range(1, 6):
        if step == 3:
            trainer.scale_lr(0.1)
        before = weight.weight.item()
        trainer.backward(weight(torch.ones(1, 1)).sum(), step)
        trainer.step(step)
        moves.append(before - weight.weight.item())
    assert moves == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01], rel=1e-4)
    assert trainer.lr() == pytest.approx(0.01)
    assert schedule.state_dict()["base_lrs"] == pytest.approx([0.01])  # what a checkpoint keeps
