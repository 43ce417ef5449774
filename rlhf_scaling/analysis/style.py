"""The one figure style (DESIGN §5.10: one shared .mplstyle), kept here as the source of truth.

`analysis/style.mplstyle` at the repository root is generated from STYLE for notebooks and
scripts outside the package (`plt.style.use("analysis/style.mplstyle")`); regenerate it with

    python -m rlhf_scaling.analysis.style analysis/style.mplstyle

(tests/analysis/test_figures.py checks the two agree). Fonts are matplotlib's bundled DejaVu Sans,
so the same records give the same pixels on every machine with the same matplotlib.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

STYLE = {
    "axes.grid": True,
    "axes.prop_cycle": "cycler('color', ['1f77b4', 'ff7f0e', '2ca02c', 'd62728', '9467bd', '8c564b', 'e377c2', '7f7f7f'])",
    "axes.spines.right": False,
    "axes.spines.top": False,
    "axes.titlesize": 10,
    "figure.dpi": 100,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "grid.alpha": 0.3,
    "image.cmap": "viridis",
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "savefig.dpi": 130,
    "svg.hashsalt": "rlhf-scaling",
}
# Colour map for RM sizes (ordered small -> large) and how each figure family draws its fits.
SIZE_CMAP = "viridis"
FIT_LINESTYLE = "--"


def mplstyle_text() -> str:
    """STYLE in matplotlib's .mplstyle syntax (key: value lines, sorted)."""
    lines = ["# Generated from rlhf_scaling/analysis/style.py (STYLE); edit there, then regenerate:",
             "#   python -m rlhf_scaling.analysis.style analysis/style.mplstyle"]
    lines += [f"{key}: {value}" for key, value in sorted(STYLE.items())]
    return "\n".join(lines) + "\n"


@contextmanager
def figure_style():
    """Matplotlib rc settings of every figure, for the duration of the block."""
    import matplotlib.pyplot as plt

    with plt.rc_context(_rc()):
        yield


def _rc() -> dict:
    """STYLE as rcParams values (the cycler string parsed the way an .mplstyle file is)."""
    from matplotlib import rcsetup

    return {k: rcsetup.validate_cycler(v) if k == "axes.prop_cycle" else v for k, v in STYLE.items()}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    text = mplstyle_text()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
