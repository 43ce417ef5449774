# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (g) The method axis: gold and proxy vs sqrt(KL) per method
#
#     rlhf-scaling -m +sweep=method                      # ppo, rloo, grpo, bon x proxy-RM sizes
#     python analysis/fig_g_methods.py --runs multirun/method/<time> --out figures/
#
# Writes methods (PNG + PDF): per proxy RM, the gold (top) and proxy (bottom) reward gain of every
# method against sqrt(KL(π ‖ π_init)), with each method's fitted Gao curve (RL form for the methods
# that train, best-of-n form for best-of-n). DPO runs (stage=dpo) appear here once they exist.

# %%
import _common
from rlhf_scaling.analysis.figures import figure_style
from rlhf_scaling.analysis.methods import fig_methods, method_curves, method_table

args = _common.parse_args("Figure (g): gold and proxy vs sqrt(KL) per optimisation method, with Gao fits.")
df, source = _common.load(args)

# %% [markdown]
# Per method and proxy RM: the highest measured gold gain and the sqrt(KL) where it was measured (means
# over seeds), the fitted α, β (95% bootstrap interval over seeds; NaN with one seed) and the fitted
# curve's peak. The method whose gold peaks at the smallest sqrt(KL) overoptimizes first.

# %%
table = method_table(method_curves(df))
_common.show_table("gold peak and Gao fit per method", _common.pick(table, [
    "group", "method", "rm", "n_seeds", "peak_gold_gain", "sqrt_kl_at_peak", "alpha", "alpha_low", "alpha_high",
    "beta", "beta_low", "beta_high", "fit_sqrt_kl_peak"]))

# %% [markdown]
# The figure. Restyle here: `fig.axes` are the gold panels (top row), then the proxy panels.

# %%
with figure_style():
    fig = fig_methods(df, source)
    _common.save_figure(fig, args.out, "methods")
