# ---
# jupyter:
#   jupytext: {formats: "py:percent", text_representation: {extension: .py, format_name: percent}}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # (e) Prompt vs response diversity at a fixed comparison budget
#
#     python analysis/fig_e_diversity.py --runs <folder> --out figures/
#
# Writes diversity (PNG + PDF): gold and RM accuracy vs K = `data.responses_per_prompt`, one line per
# comparison budget, each point labelled with its prompts budget / C(K,2); and diversity_heatmap: gold
# over (budget, K), one panel per (sweep, RM) that varies K over >= 2 budgets (skipped, saying why, at one).

# %%
import _common
from rlhf_scaling.analysis.figures import GOLD_SUMMARIES, fig_diversity, fig_diversity_lines, figure_style
from rlhf_scaling.analysis.runs import per_run

args = _common.parse_args("Figure (e): gold reward over prompts x responses per prompt at a fixed budget.")
df, source = _common.load(args)

# %% [markdown]
# The cells: each run's gold reward (the first of GOLD_SUMMARIES the runs report) with its K,
# budget and prompts, for the sweeps that vary K.

# %%
K, BUDGET = "config.data.responses_per_prompt", "config.data.comparison_budget"
runs = per_run(df)
gold = next((c for c in GOLD_SUMMARIES if c in runs and runs[c].notna().any()), None)
if gold and K in runs and BUDGET in runs:
    cells = runs.dropna(subset=[gold, K, BUDGET])
    cells = cells[cells.groupby("group")[K].transform("nunique") >= 2]  # sweeps over K only
    cells = cells.assign(n_prompts=cells[BUDGET] // (cells[K] * (cells[K] - 1) // 2))
    _common.show_table(f"gold reward ({gold}) per run",
                       _common.pick(cells, ["run_id", "group", "config.rm.name", BUDGET, K, "n_prompts", gold]))
else:
    print("no runs with a gold summary, K and a comparison budget")

# %% [markdown]
# The heatmap (>= 2 budgets). Restyle here: one axes per panel, each followed by its colour bar in `fig.axes`.

# %%
with figure_style():
    fig = fig_diversity(df, source)
    _common.save_figure(fig, args.out, "diversity_heatmap")

# %% [markdown]
# The same runs as lines: gold and RM accuracy vs K, one line per budget, each point labelled with its
# prompts; the footer states the RM optimiser steps each K took.

# %%
with figure_style():
    fig = fig_diversity_lines(df, source)
    _common.save_figure(fig, args.out, "diversity")
