"""Run comparison report of a sweep or study: the summary table (printed), runs.csv (every run,
every summary metric), the figures, and report.md embedding them.

    rlhf-scaling-report --runs <folder> --out <dir>
    rlhf-scaling-report --wandb entity/project --filters '{"group": "rm_size"}' --out <dir>

<dir>/runs.csv, <dir>/report.md, <dir>/figures/<name>.{png,pdf}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import pandas as pd

from rlhf_scaling.analysis.figures import (FIGURES, coefficient_scaling, fitted_coefficients, load_runs,
                                           one_line_warnings, source_args, write_figures)
from rlhf_scaling.analysis.runs import summary_table

# Summary metrics shown in the printed table and report.md (runs.csv keeps all of them).
KEY_METRICS = ["summary.rm/n_params", "summary.rm/val_accuracy", "summary.bon/alpha_gold", "summary.bon/beta_gold",
               "summary.bon/best_gold", "summary.ppo/alpha_gold", "summary.ppo/beta_gold", "summary.ppo/peak_gold",
               "summary.ppo/final_gold", "summary.ppo/final_kl"]


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The printed view: identity, key config, key metrics; columns without any value dropped."""
    cols = [c for c in table.columns if not c.startswith("summary.") or c in KEY_METRICS]
    shown = table[cols].dropna(axis=1, how="all")
    return shown.rename(columns=lambda c: c.removeprefix("summary.").removeprefix("config."))


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
    table = summary_table(df)
    table.to_csv(out_dir / "runs.csv", index=False)
    shown = shown_table(table)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    figures = write_figures(df, out_dir / "figures", source)
    scaling = coefficient_scaling(fitted_coefficients(df))
    lines = [f"# Runs in `{source}`", "", f"{len(table)} runs; every summary metric is in `runs.csv`.", "",
             _markdown(shown), ""]
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
    with one_line_warnings():
        report = write_report(args.runs, args.out, wandb_path=args.wandb, filters=args.filters)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
