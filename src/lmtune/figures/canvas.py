"""Matplotlib figures written as PNG files of one fixed size, without a display."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PLOT_SIZE = (6.4, 4.0)  # inches; at 100 dpi, 640 x 400 pixels
DPI = 100


def new_figure() -> tuple[Any, Any]:
    """A (figure, axes) pair of PLOT_SIZE, drawn by the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=PLOT_SIZE)


def save_png(fig: Any, path: Path) -> Path:
    """Write the figure to `path` through a temporary file, then close it.

    The temporary name carries the process id: workers of one study write the same plots.
    """
    import matplotlib.pyplot as plt

    fig.set_size_inches(*PLOT_SIZE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=DPI)
    finally:
        plt.close(fig)
    tmp.replace(path)
    return path
