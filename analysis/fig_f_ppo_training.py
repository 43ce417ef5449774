# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (f) PPO training curves
#
#     python analysis/fig_f_ppo_training.py --runs <folder> --out figures/
#
# Writes ppo_training (PNG + PDF): proxy reward, gold reward and KL(π ‖ π_init) vs PPO iteration,
# one line per run, coloured by RM size.

# %%
import _common
from rlhf_scaling.analysis.figures import fig_ppo_training, figure_style
from rlhf_scaling.analysis.runs import per_run

args = _common.parse_args("Figure (f): PPO proxy reward, gold reward and KL vs iteration.")
df, source = _common.load(args)

# %% [markdown]
# Where each run ended: the last logged iteration and its proxy, gold and KL (W&B summary
# semantics), and the best gold reward on the way.

# %%
runs = per_run(df)
ppo = _common.pick(runs[runs["stage"] == "ppo"], ["run_id", "config.rm.name", "summary.ppo/step", "summary.ppo/proxy",
                                                  "summary.ppo/gold", "summary.ppo/kl", "summary.ppo/peak_gold"])
_common.show_table("PPO runs at their last iteration", ppo)

# %% [markdown]
# The figure. Restyle here: `fig.axes` are proxy, gold, KL (those the runs logged).

# %%
with figure_style():
    fig = fig_ppo_training(df, source)
    _common.save_figure(fig, args.out, "ppo_training")
