# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # Exploring a scaling study
#
# A walk through the records of one study: the runs table, the per-run summary, the Gao
# overoptimization fits per RM size, how α and β scale with RM parameters, RM accuracy, and a
# few figures. It runs top to bottom as a script or cell by cell in Jupyter (jupytext):
#
#     python analysis/explore_study.py                       # the newest `make study` output
#     RLHF_RUNS=multirun/overoptimization/<time> RLHF_OUT=figures/explore python analysis/explore_study.py
#     jupytext --to notebook analysis/explore_study.py       # or open the .py file as a notebook
#
# The runs come from RLHF_RUNS (or `--runs` / `--wandb` on the command line), else the newest
# folder under outputs/default/study/, else outputs/; figures go to RLHF_OUT (default figures/explore).

# %%
import _common

from rlhf_scaling.analysis import figures
from rlhf_scaling.analysis.report import stage_blocks
from rlhf_scaling.analysis.runs import summary_table

args = _common.parse_args("Walk through a study's run records.", default_out="figures/explore")
df, source = _common.load(args)

# %% [markdown]
# ## The runs table
#
# One row per (run, logged record): `config.*` (the resolved config, flattened), the metrics as
# logged, and `summary.*` (last value of each metric, plus what the job reported at the end).

# %%
print(f"runs table: {df.shape[0]} rows x {df.shape[1]} columns")
print(df.groupby("stage")["run_id"].nunique().rename("runs per stage").to_string())

# %% [markdown]
# ## One row per run
#
# `summary_table` keeps the key config columns, those that vary, and every summary metric;
# `stage_blocks` (the report's view) trims that to one narrow table per stage: the settings that
# vary between its runs and its headline metrics.

# %%
table = summary_table(df)
print(f"summary table: {table.shape[0]} runs x {table.shape[1]} columns")
for stage, block in stage_blocks(table):
    _common.show_table(f"{stage} runs (varied settings and key metrics)", block)

# %% [markdown]
# ## Overoptimization per RM size
#
# Each best-of-n and PPO run's gold-reward gain fitted with its Gao form (BoN d(α − βd), RL
# d(α − β log d), d = sqrt(KL)), with where the fitted curve peaks (d*, R*) and falls back to 0.

# %%
coef = _common.with_peaks(figures.fitted_coefficients(df)).sort_values(["group", "kind", "n_params", "run_id"])
_common.show_table("overoptimization coefficients per run",
                   _common.pick(coef, ["kind", "run_id", "rm", "n_params", "alpha", "beta", "peak_sqrt_kl",
                                       "peak_gain", "zero_sqrt_kl"]))

# %% [markdown]
# ## α and β vs RM size (Gao et al. Fig. 3)
#
# Within each sweep: coefficient ≈ slope · ln N + intercept over the RM parameters N. Gao et al.
# find α rising and β falling with N: larger proxies can be optimised further before gold falls.

# %%
scaling = figures.coefficient_scaling(coef)
_common.show_table("coefficient = slope * ln N + intercept", scaling)

# %% [markdown]
# ## Reward-model accuracy
#
# Held-out pair accuracy against the gold labels, per RM job, and its mean per RM and budget.

# %%
accuracy = _common.rm_accuracy_table(df)
_common.show_table("RM held-out accuracy per RM job", accuracy)
if not accuracy.empty and "config.data.comparison_budget" in accuracy:
    mean = accuracy.pivot_table(index=["config.rm.name", "n_params"], columns="config.data.comparison_budget",
                                values="summary.rm/val_accuracy", aggfunc="mean")
    print("\nmean accuracy (rows: RM, columns: comparison budget)")
    print(mean.sort_index(level="n_params").to_string(float_format=lambda v: f"{v:.3f}"))

# %% [markdown]
# ## Figures
#
# Drawn by the library's figure functions and saved as PNG and PDF; in Jupyter each one is shown
# below its cell. Every figure is also its own script: analysis/fig_*.py.

# %%
with figures.figure_style():
    _common.save_figure(figures.fig_overoptimization_bon(df, source), args.out, "overoptimization_bon")
    _common.save_figure(figures.fig_overoptimization_ppo(df, source), args.out, "overoptimization_ppo")

# %%
with figures.figure_style():
    _common.save_figure(figures.fig_coefficients(df, source), args.out, "coefficients_vs_rm_size")
    _common.save_figure(figures.fig_rm_accuracy(df, source), args.out, "rm_accuracy")
