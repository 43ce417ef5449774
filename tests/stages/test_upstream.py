"""stages/upstream.py: what a job that builds its upstream artifacts records about them."""

from __future__ import annotations

from rlhf_scaling.cli import compose


def test_build_upstream_summarises_the_jobs_own_policy_and_the_rms_facts(monkeypatch):
    """The upstream recipes' final facts go into the job's summary, once per stage: in the fixed-RM design
    (proxy.trained_on) the plan runs SFT twice, the job's own policy first; its facts, and never the RM
    data policy's, describe the job, even when its own has none (a pretrained policy returns {})."""
    import importlib

    from rlhf_scaling.stages.upstream import ensure_upstream

    class Recorder:
        def __init__(self):
            self.values = {}

        def summary(self, **values):
            self.values.update(values)

    def fake(name):
        return lambda cfg, tracker: ({} if name == "sft" and cfg.policy.name == "tiny-s" else
                                     {f"{name}/artifact": f"{name}-of-{cfg.policy.name}"})

    for name in ("sft", "data", "rm"):
        monkeypatch.setattr(importlib.import_module(f"rlhf_scaling.stages.{name}"), "run", fake(name))
    tracker = Recorder()
    ensure_upstream(compose(["stage=ppo", "model@policy=tiny-s", "+model@proxy.trained_on=tiny-m"]), tracker, before="ppo")
    assert tracker.values == {"data/artifact": "data-of-tiny-m", "rm/artifact": "rm-of-tiny-m"}  # no sft/* of tiny-m
    tracker = Recorder()
    ensure_upstream(compose(["stage=bon", "model@policy=tiny-m"]), tracker, before="bon")
    assert tracker.values == {"sft/artifact": "sft-of-tiny-m", "data/artifact": "data-of-tiny-m", "rm/artifact": "rm-of-tiny-m"}
