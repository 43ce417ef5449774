"""rlhf-scaling: a research framework for RLHF scaling studies (reward models, best-of-n, PPO, overoptimization)."""

__version__ = "0.1.0"
