# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (c) Reward-model accuracy vs comparisons and vs RM size
#
#     python analysis/fig_c_rm_accuracy.py --runs <folder> --out figures/
#
# Writes rm_accuracy (PNG + PDF): held-out pair accuracy (against the gold labels) per RM job,
# left against the training comparison budget, right against RM parameters.

# %%
import _common
from rlhf_scaling.analysis.figures import fig_rm_accuracy, figure_style, rm_scaling_fits

args = _common.parse_args("Figure (c): RM held-out accuracy vs comparisons and vs RM size.")
df, source = _common.load(args)

# %% [markdown]
# One row per RM job; the figure draws the mean over the jobs that share a point.

# %%
accuracy = _common.rm_accuracy_table(df)
_common.show_table("RM held-out accuracy per RM job", accuracy)

# %% [markdown]
# Power laws behind the dashed lines: held-out error (1 − accuracy) and loss against comparisons
# (one fit per RM) and against RM parameters (one fit per budget), y = a·x^(−b) + c, with the
# floor c only where AICc prefers it (`curves.fit_power_law_select`); 3 or more points per fit.

# %%
_common.show_table("RM error and loss power laws", rm_scaling_fits(df))

# %% [markdown]
# The figure. Restyle here: `fig.axes[0]` is accuracy vs comparisons, `fig.axes[1]` vs RM size.

# %%
with figure_style():
    fig = fig_rm_accuracy(df, source)
    _common.save_figure(fig, args.out, "rm_accuracy")
