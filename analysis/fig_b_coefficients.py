# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (b) Overoptimization coefficients vs RM size (Gao et al. 2022, Fig. 3)
#
#     python analysis/fig_b_coefficients.py --runs <folder> --out figures/
#
# Writes coefficients_vs_rm_size (PNG + PDF): each run's fitted gold α and β against its proxy-RM
# parameters N, with the log-linear fit coefficient ≈ slope·ln N + intercept within a sweep.

# %%
import _common
from rlhf_scaling.analysis.figures import coefficient_scaling, fig_coefficients, figure_style, fitted_coefficients

args = _common.parse_args("Figure (b): fitted alpha, beta vs RM parameters with log-linear fits.")
df, source = _common.load(args)

# %% [markdown]
# The points (one gold-gain fit per run) and the lines (one log-linear fit per sweep, method and
# coefficient; sweeps with a single RM size have none).

# %%
coef = fitted_coefficients(df)
_common.show_table("fitted alpha, beta per run",
                   coef.dropna(subset=["n_params"]).sort_values(["group", "kind", "n_params", "run_id"]))
_common.show_table("coefficient = slope * ln N + intercept", coefficient_scaling(coef))

# %% [markdown]
# The figure. Restyle here: `fig.axes[0]` is α, `fig.axes[1]` is β.

# %%
with figure_style():
    fig = fig_coefficients(df, source)
    _common.save_figure(fig, args.out, "coefficients_vs_rm_size")
