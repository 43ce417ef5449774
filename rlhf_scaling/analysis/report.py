"""Run comparison report of a sweep or study: the summary table (printed), runs.csv (every run,
every summary metric), the figures, and report.md embedding them.

    rlhf-scaling-report --runs <folder> --out <dir>
    rlhf-scaling-report --wandb entity/project --filters '{"group": "rm_size"}' --out <dir>

<dir>/runs.csv, <dir>/report.md, <dir>/figures/<name>.{png,pdf}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Tuple

import pandas as pd

from rlhf_scaling.analysis.figures import (FIGURES, coefficient_intervals, coefficient_scaling, fitted_coefficients,
                                           load_runs, one_line_warnings, source_args, write_figures)
from rlhf_scaling.analysis.runs import as_text, full_table, named_once, varying_config, with_rm_facts

# Summary metrics printed per stage, where the runs have them (runs.csv keeps every metric). A
# best-of-n or PPO job shows the accuracy of the RM it used (runs.with_rm_facts).
STAGE_METRICS = {
    "sft": ["sft/gold_mean", "sft/response_length"],
    "data": ["data/comparisons", "data/n_train_prompts", "data/responses_per_prompt"],
    "rm": ["rm/n_params", "rm/train_comparisons", "rm/val_accuracy", "rm/val_loss"],
    "bon": ["rm/val_accuracy", "bon/best_n", "bon/best_gold", "bon/alpha_gold", "bon/beta_gold"],
    "ppo": ["rm/val_accuracy", "ppo/final_gold", "ppo/peak_gold", "ppo/final_kl", "ppo/alpha_gold", "ppo/beta_gold"],
    "study": ["study/minutes", "study/figures"],
}
IDENTITY = ["run_id", "status"]
# The config sections a stage's result depends on (the recipe of its artifacts, then its own):
# a setting outside them is not shown in that stage's block even where it varies.
RECIPE = {"sft": ("policy", "task", "sft"), "data": ("policy", "task", "sft", "data", "gold")}
RECIPE["rm"] = RECIPE["data"] + ("rm", "rm_train")
RECIPE["bon"], RECIPE["ppo"] = RECIPE["rm"] + ("bon",), RECIPE["rm"] + ("ppo",)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(column: str) -> str:
    return column.removeprefix("summary.").removeprefix("config.")


def short_ids(ids: pd.Series, width: int = 28) -> pd.Series:
    """Run ids cut for the terminal: each folder name longer than `width` keeps its start, '…' and
    its last 12 characters (a sweep point's folder spells out its overrides, which the settings
    columns show anyway, then ends in its run id). The full ids are kept where cutting would make
    two runs look the same."""
    cut = ids.map(lambda i: "/".join(p if len(p) <= width else p[:width - 12] + "…" + p[-12:]
                                     for p in str(i).split("/")))
    return cut if cut.nunique() == ids.nunique() else ids


def varied_settings(table: pd.DataFrame) -> List[str]:
    """The config columns that differ between the runs (model specs named once, stage.name left
    out: the runs are printed by stage)."""
    cols = [c for c in varying_config(table) if c != "config.stage.name"]
    return named_once(table, cols)


def _matters(column: str, stage: str) -> bool:
    """Whether a config column can change a `stage` job's result: top-level keys (experiment,
    seed) always, sections only when in the stage's RECIPE (every section for other stages)."""
    key = column.removeprefix("config.")
    return "." not in key or stage not in RECIPE or key.split(".", 1)[0] in RECIPE[stage]


def _headers(config: List[str]) -> dict:
    """Config column -> its printed header: the key's last part where that says what it is on its
    own (longer than 12 characters) and no other shown key ends the same way
    (data.responses_per_prompt -> responses_per_prompt; rm.name, rm_train.seed stay as they are)."""
    last = [c.rsplit(".", 1)[-1] for c in config]
    return {c: name if len(name) > 12 and last.count(name) == 1 else c.removeprefix("config.")
            for c, name in zip(config, last)}


def stage_blocks(table: pd.DataFrame) -> List[Tuple[str, pd.DataFrame]]:
    """The readable view, one block per stage: identity, the varied settings that differ within
    the stage's runs, and the stage's key metrics (STAGE_METRICS) that any of its runs has."""
    table = with_rm_facts(table)
    varied = varied_settings(table)
    stages = table["stage"].fillna("?").astype(str)
    order = [s for s in STAGE_METRICS if s in set(stages)] + sorted(set(stages) - set(STAGE_METRICS))
    blocks = []
    for stage in order:
        runs = table[stages == stage]
        config = [c for c in varied if as_text(runs[c]).nunique() > 1 and _matters(c, stage)]
        metrics = [f"summary.{m}" for m in STAGE_METRICS.get(stage, [])]
        metrics = [m for m in metrics if m in runs and runs[m].notna().any()]
        block = runs[IDENTITY + config + metrics].assign(run_id=lambda b: short_ids(b["run_id"]))
        blocks.append((stage, block.rename(columns=_headers(config)).rename(columns=_short).reset_index(drop=True)))
    return blocks


def print_summary(table: pd.DataFrame, csv: Path) -> None:
    """The terminal view: what varies, then a narrow table per stage; the full table is in csv."""
    varied = varied_settings(table)
    print(f"{len(table)} runs; every config key and summary metric ({table.shape[1]} columns) in {csv}")
    print("settings that vary: " + (", ".join(f"{_short(c)} ({as_text(table[c]).nunique()} values)"
                                              for c in varied) or "none"))
    for stage, block in stage_blocks(table):
        print(f"\n== {stage} ({len(block)} run{'s' if len(block) != 1 else ''}) ==")
        print(block.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else _fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_report(runs_source: Optional[str], out_dir, *, wandb_path: Optional[str] = None,
                 filters: Optional[dict] = None) -> Path:
    """runs.csv, figures/ and report.md in out_dir; prints the table; returns the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = wandb_path or runs_source
    df = load_runs(runs_source, wandb_path, filters)
    if df.empty:
        raise SystemExit(f"no run records in {source}")
    table = full_table(df)
    csv = out_dir / "runs.csv"
    table.to_csv(csv, index=False)
    print_summary(table, csv)
    figures = write_figures(df, out_dir / "figures", source)
    scaling = coefficient_scaling(fitted_coefficients(df))
    varied = ", ".join(f"`{_short(c)}`" for c in varied_settings(table)) or "none"
    lines = [f"# Runs in `{source}`", "", f"{len(table)} runs; every config key and summary metric is in "
             f"`runs.csv`. Settings that vary: {varied}.", ""]
    for stage, block in stage_blocks(table):
        lines += [f"## {stage}", "", _markdown(block), ""]
    per_setting = coefficient_intervals(df)
    if not per_setting.empty:
        lines += ["## Gao α, β per setting (mean over seeds, 95% bootstrap interval over seeds; "
                  "turns_down False: β ≤ 0, no peak)", "", _markdown(per_setting), ""]
    if not scaling.empty:
        lines += ["## Overoptimization coefficients vs RM size (coefficient ≈ slope·ln N + intercept)", "",
                  _markdown(scaling), ""]
    lines += ["## Figures", ""]
    for png in figures:
        doc = (FIGURES[png.stem].__doc__ or "").strip().splitlines()
        lines += [f"### {png.stem}", "", *(doc[:1] if doc else []), "",
                  f"![{png.stem}](figures/{png.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="rlhf-scaling-report",
                                     description="Summary table, runs.csv, figures and report.md of a set of runs.")
    source_args(parser)
    parser.add_argument("--out", default="report", help="output folder")
    args = parser.parse_args(argv)
    if args.runs and not Path(args.runs).is_dir():
        parser.exit(2, f"{parser.prog}: error: no such runs folder: {args.runs}\n")
    with one_line_warnings():
        report = write_report(args.runs, args.out, wandb_path=args.wandb, filters=args.filters)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
