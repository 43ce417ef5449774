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
# Writes rm_accuracy (PNG + PDF): held-out pair accuracy (against the gold labels), left against
# the comparisons each RM trained on (as its RM job logged them), right against RM parameters; one
# line per setting that varies across the RMs (RM, loss, K, budget, ...), seeds averaged.

# %%
import _common
from rlhf_scaling.analysis.figures import (RM_AXES, fig_rm_accuracy, figure_style, rm_points, rm_runs,
                                           rm_scaling_fits)

args = _common.parse_args("Figure (c): RM held-out accuracy vs comparisons and vs RM size.")
df, source = _common.load(args)

# %% [markdown]
# One row per RM job (one per RM artifact); `comparisons` is what the RM trained on.

# %%
accuracy = _common.rm_accuracy_table(df)
_common.show_table("RM held-out accuracy per RM job", accuracy)

# %% [markdown]
# The figure's points: per line (`group`: the settings that vary, seeds left out) and x, the mean
# accuracy over the seeds there and its 95% t-interval (`curves.mean_interval`; none for one seed).

# %%
runs = rm_runs(df)
for against in RM_AXES:
    points = rm_points(runs, against) if not runs.empty else None
    if points is not None:
        _common.show_table(f"figure (c) points against {against}",
                           points[["group", "x", "n_runs", "accuracy", "low", "high"]])

# %% [markdown]
# Power laws behind the dashed lines: held-out error (1 − accuracy) and loss against comparisons
# and against RM parameters, one per line of the figure, y = a·x^(−b) + c, with the
# floor c only where AICc prefers it (`curves.fit_power_law_select`); 3 or more points per fit.
# The figure draws a law only with its 95% seed-bootstrap band (`figures.error_fit_band`), so a
# law listed here for a line with one seed at some point is not drawn.

# %%
_common.show_table("RM error and loss power laws", rm_scaling_fits(df))

# %% [markdown]
# The figure. Restyle here: `fig.axes[0]` is accuracy vs comparisons, `fig.axes[1]` vs RM size.

# %%
with figure_style():
    fig = fig_rm_accuracy(df, source)
    _common.save_figure(fig, args.out, "rm_accuracy")
