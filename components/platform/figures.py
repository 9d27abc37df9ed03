"""Matplotlib figures written as PNG files, atomically (complete or absent)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from alignflow.components.platform.atomic import write_bytes_atomic


def write_png_atomic(fig: Any, out: Path, dpi: int = 110) -> Path:
    """Render ``fig`` (a ``matplotlib.figure.Figure``) to ``out`` as PNG at ``dpi`` and close it;
    returns ``out``. Rendered in memory first, so a reader never sees half an image."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes_atomic(Path(out), buffer.getvalue())
