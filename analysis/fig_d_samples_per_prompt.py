# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (d) Gold reward vs samples per prompt
#
#     python analysis/fig_d_samples_per_prompt.py --runs <folder> --out figures/
#
# Writes samples_per_prompt (PNG + PDF): best-of-n gold reward vs n, and PPO final / peak gold
# reward vs rollouts per prompt (`ppo.samples_per_prompt`, sweeps over at least two values).

# %%
import _common
from rlhf_scaling.analysis.figures import (fig_samples_per_prompt, fig_samples_per_prompt_matched, figure_style,
                                          overoptimization_curves)
from rlhf_scaling.analysis.runs import per_run

args = _common.parse_args("Figure (d): gold reward vs samples per prompt (best-of-n n, PPO rollouts).")
df, source = _common.load(args)

# %% [markdown]
# Best-of-n: the n at which each run's gold reward is highest (more samples past it overoptimize).

# %%
bon = overoptimization_curves(df, "bon")
if not bon.empty:
    bon = bon.loc[bon.groupby("run_id", sort=True)["gold"].idxmax(), ["run_id", "rm", "x", "gold"]]
    bon = bon.rename(columns={"x": "best_n", "gold": "best_gold"})
_common.show_table("best-of-n: best n per run", bon)

# %% [markdown]
# PPO: final and peak gold reward of each run against its rollouts per prompt.

# %%
runs = per_run(df)
ppo = runs[runs["stage"] == "ppo"]
ppo = _common.pick(ppo, ["run_id", "group", "config.rm.name", "config.ppo.samples_per_prompt",
                         "summary.ppo/final_gold", "summary.ppo/peak_gold"])
_common.show_table("PPO: gold reward per run", ppo)

# %% [markdown]
# The figure. Restyle here: `fig.axes` holds the best-of-n panel, then the PPO panel (each only
# where the runs have its data).

# %%
with figure_style():
    fig = fig_samples_per_prompt(df, source)
    _common.save_figure(fig, args.out, "samples_per_prompt")

# %% [markdown]
# Fair comparisons (Hou et al. 2024): more rollouts per prompt also means more rollouts and gradient
# steps per iteration, so compare at matched KL (each run's held-out evaluations interpolated at the
# sqrt KL every run reached) and at matched total rollouts.

# %%
with figure_style():
    fig = fig_samples_per_prompt_matched(df, source)
    _common.save_figure(fig, args.out, "samples_per_prompt_matched")
