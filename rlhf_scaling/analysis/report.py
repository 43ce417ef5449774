"""Run comparison report: a table of the runs of a sweep or study with their key config and
summary metrics, printed, and written as runs.csv and report.md (with the figures).

    rlhf-scaling-report --runs <folder> --out <dir>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_scaling.analysis.figures import load_runs, write_figures
from rlhf_scaling.analysis.load import summary_table

KEY_METRICS = ["summary.rm/val_accuracy", "summary.rm/n_params", "summary.bon/best_gold", "summary.bon/alpha_gold",
               "summary.bon/beta_gold", "summary.ppo/peak_gold", "summary.ppo/final_gold", "summary.ppo/final_kl"]


def write_report(runs_source: str, out_dir, *, wandb_path=None) -> Path:
    """runs.csv (every run, every summary metric), figures, and report.md; returns the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load_runs(runs_source, wandb_path)
    table = summary_table(df)
    table.to_csv(out_dir / "runs.csv", index=False)
    shown = table[[c for c in table.columns if not c.startswith("summary.") or c in KEY_METRICS]]
    shown = shown.rename(columns=lambda c: c.replace("summary.", "").replace("config.", ""))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    figures = write_figures(df, out_dir / "figures", wandb_path or runs_source)
    lines = [f"# Runs in {wandb_path or runs_source}", "", f"{len(table)} runs.", "", "```",
             shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"), "```", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Table of runs, runs.csv, figures and report.md.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs")
    src.add_argument("--wandb")
    parser.add_argument("--out", default="report")
    args = parser.parse_args(argv)
    print(f"report: {write_report(args.runs, args.out, wandb_path=args.wandb)}")


if __name__ == "__main__":
    main()
