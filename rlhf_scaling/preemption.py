"""Checkpoint on a preemption signal, then requeue: the signal is held until the training loop
reaches a safe point (an iteration boundary), where the stage saves its checkpoint and the
signal's previous handler runs.

Under the submitit launcher that previous handler is submitit's: on SIGUSR2 (Slurm sends it
`signal_delay_s` before the time limit via `--signal=USR2@<s>`, or a preemption does) it pickles
the job, requeues it with `scontrol requeue` and exits; the requeued job starts again in the same
run folder and resumes from the checkpoint written here, with no iteration lost or repeated.
Without submitit (plain sbatch/torchrun) the job saves and exits with status 128 + signal.

Signal name: SUBMITIT_PREEMPT_SIGNAL (submitit's own variable), default USR2. Ranks: the signal
reaches every task of the job at slightly different times, so the "any rank was signalled" flag
is summed over ranks at each safe point and every rank saves (a collective) and stops together.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

log = logging.getLogger(__name__)


def preempt_signal() -> signal.Signals:
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


class Preemption:
    """Context manager around a training loop; call `checkpoint_if_signalled(save)` at each safe point.

        with Preemption() as preemption:
            for step in ...:
                ...one iteration...
                preemption.checkpoint_if_signalled(lambda: save(step + 1))
    """

    def __init__(self, signum: Optional[int] = None):
        self.signum = signum if signum is not None else preempt_signal()
        self.received: Optional[int] = None
        self._previous = None
        self._installed = False

    def __enter__(self) -> "Preemption":
        # Python only lets the main thread install handlers; elsewhere the signal keeps its old handler.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._hold)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def _hold(self, signum, frame) -> None:
        log.warning("received %s: checkpointing at the end of this iteration", signal.Signals(signum).name)
        self.received = signum

    def signalled(self) -> bool:
        """Whether any rank received the signal (a collective under torch.distributed: every rank calls it)."""
        import torch

        from rlhf_scaling.distributed import sum_over_ranks

        return bool(sum_over_ranks(torch.tensor(float(self.received is not None))).item() > 0)

    def checkpoint_if_signalled(self, save: Callable[[], None]) -> None:
        """At a safe point: if signalled, run `save` (every rank), then hand the signal on and stop."""
        if not self.signalled():
            return
        save()
        signum = self.received or self.signum
        log.warning("checkpoint written after %s; stopping so the job can be requeued", signal.Signals(signum).name)
        previous = self._previous
        self.__exit__()
        if callable(previous):
            previous(signum, None)  # submitit: pickle the job, `scontrol requeue`, sys.exit
        # No handler that ends the process (submitit's non-zero ranks return; plain jobs have none).
        sys.exit(128 + signum)
