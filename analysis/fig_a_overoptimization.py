# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (a) Overoptimization: gold and proxy reward gain vs sqrt(KL) (Gao et al. 2022, Fig. 1)
#
#     python analysis/fig_a_overoptimization.py --runs <folder> --out figures/
#
# Writes overoptimization_bon and overoptimization_ppo (PNG + PDF): one panel for gold, one for
# proxy gain, a colour per RM size, the fitted Gao form dashed (BoN d(α − βd), RL d(α − β log d)).

# %%
import _common
from rlhf_scaling.analysis.figures import (fig_overoptimization_bon, fig_overoptimization_ppo, figure_style,
                                           fitted_coefficients)

args = _common.parse_args("Figure (a): gold and proxy reward gain vs sqrt(KL), best-of-n and PPO.")
df, source = _common.load(args)

# %% [markdown]
# The fits behind the dashed lines: α, β of each run's gold gain (α_proxy, β_proxy of its proxy
# gain), and where the fitted gold curve peaks and falls back to zero, in sqrt(KL) units. Where
# β <= 0 (turns_down False) the fit never turns down: the Gao form does not hold, there is no peak
# (NaN, not an infinite one), and the figure leaves that fit out and names the run in its footer.

# %%
coef = _common.with_peaks(fitted_coefficients(df)).sort_values(["kind", "group", "n_params", "run_id"])
_common.show_table("fitted coefficients per run", coef.drop(columns="group"))

# %% [markdown]
# The figures. Restyle here: `fig.axes[0]` is the gold panel, `fig.axes[1]` the proxy panel.

# %%
with figure_style():
    for name, draw in (("overoptimization_bon", fig_overoptimization_bon),
                       ("overoptimization_ppo", fig_overoptimization_ppo)):
        fig = draw(df, source)
        _common.save_figure(fig, args.out, name)
