"""What every analysis script and notebook shares: where the runs come from, loading them, printing
a table, and writing a figure. The figures and fits themselves are in rlhf_scaling.analysis.figures.

The runs source is `--runs <folder>` or `--wandb entity/project`; without either, the RLHF_RUNS
environment variable, else the newest embedded default study under outputs/ (what `make study`
writes). Notebooks cannot take argv, so they rely on the environment variables (RLHF_RUNS, RLHF_OUT).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from rlhf_scaling.analysis import figures
from rlhf_scaling.analysis.runs import per_run
from rlhf_scaling.curves import peak, zero_crossing

REPO = Path(__file__).resolve().parents[1]
# Where `make study` (rlhf-scaling with no arguments) writes: outputs/<experiment>/<stage>/<time>.
DEFAULT_STUDIES = REPO / "outputs" / "default" / "study"


def default_runs() -> str:
    """RLHF_RUNS, else the newest default study (its folder names are sortable times), else outputs/."""
    if os.environ.get("RLHF_RUNS"):
        return os.environ["RLHF_RUNS"]
    studies = sorted(p for p in DEFAULT_STUDIES.glob("*") if p.is_dir())
    return str(studies[-1] if studies else REPO / "outputs")


def parse_args(description: str, default_out: str = "figures", argv: Optional[Sequence[str]] = None):
    """--runs/--wandb/--filters (as the figures command) and --out, with the defaults above."""
    parser = argparse.ArgumentParser(description=description)
    figures.source_args(parser)
    parser.add_argument("--out", default=os.environ.get("RLHF_OUT", default_out),
                        help="output folder for the PNG and PDF files (default: $RLHF_OUT or %(default)s)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not {"--runs", "--wandb"} & {a.split("=", 1)[0] for a in argv}:
        argv = ["--runs", default_runs()] + argv
    # parse_known_args: a Jupyter kernel runs the notebook with its own `-f <connection file>`.
    args, _ = parser.parse_known_args(argv)
    return args


def load(args) -> Tuple[pd.DataFrame, str]:
    """The runs table and its source name; exits with a message when there are no run records."""
    source = args.wandb or args.runs
    hint = "run `make study`, or set RLHF_RUNS / pass --runs"
    try:
        with figures.one_line_warnings():
            df = figures.load_runs(args.runs, args.wandb, args.filters)
    except FileNotFoundError as err:
        raise SystemExit(f"{err} ({hint})") from None
    if df.empty:
        raise SystemExit(f"no run records in {source} ({hint})")
    print(f"{df['run_id'].nunique()} runs from {source}")
    return df, source


def show_table(title: str, table: pd.DataFrame) -> None:
    """Print a table between a '== title ==' line and a blank line, whitespace-separated and
    complete (no '...'), so it reads in a terminal and parses back (the tests compare it with the
    library's numbers)."""
    print(f"\n== {title} ==")
    print("(no rows)" if table.empty else table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print()  # a blank line ends the table


def save_figure(fig, out, name: str) -> Optional[Path]:
    """Write name.png and name.pdf into `out` with figures.save and print the path; call it inside
    figures.figure_style() so the saved resolution is the project's. A None figure (the runs lack
    its data) or a str (the reason it would mislead on them) is skipped with a note, as the figures
    command does."""
    if fig is None or isinstance(fig, str):
        print(f"skipped {name}: {fig or 'no data for it'}")
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = figures.save(fig, out, name)
    print(f"wrote {png} (+ .pdf)")
    _display(png)
    return png


def _display(png: Path) -> None:
    """Show the saved PNG inline under Jupyter. figures.py selects the Agg backend, where plt.show()
    shows nothing, so the notebook displays the file itself (exactly what was written)."""
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display

        display(Image(filename=str(png)))


def pick(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The named columns that the frame has, in that order (runs of other studies log other keys)."""
    return frame[[c for c in columns if c in frame]]


def with_peaks(coef: pd.DataFrame) -> pd.DataFrame:
    """fitted_coefficients plus where each fitted gold curve peaks (d*, R*) and returns to zero, in
    sqrt(KL) units (curves.peak / zero_crossing with the kind's Gao form); NaN where β <= 0
    (turns_down False: the fit never turns down, so it has no peak, not an infinite one)."""
    forms = coef["kind"].map(figures.FORM_OF)
    peaks = [peak(a, b, f) if ok else (np.nan, np.nan)
             for a, b, f, ok in zip(coef["alpha"], coef["beta"], forms, coef["turns_down"])]
    zeros = [zero_crossing(a, b, f) if ok else np.nan
             for a, b, f, ok in zip(coef["alpha"], coef["beta"], forms, coef["turns_down"])]
    return coef.assign(peak_sqrt_kl=[p[0] for p in peaks], peak_gain=[p[1] for p in peaks], zero_sqrt_kl=zeros)


def rm_accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trained RM: RM, its parameters, comparison budget, the comparisons it trained on,
    held-out accuracy and loss (figure (c)'s runs, as figures.rm_runs selects them)."""
    runs = figures.rm_runs(df)
    if runs.empty:
        return pd.DataFrame()
    return pick(runs, ["run_id", "config.rm.name", "n_params", figures.RM_BUDGET, "comparisons", figures.RM_ACCURACY,
                       figures.RM_LOSS]).reset_index(drop=True)
