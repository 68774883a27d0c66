"""Showing a run: the live napari overlay (``livescope view``) and the HTML run report.

`OverlayViewer` attaches napari to a running run's overlay bus (needs the
``viewer`` extra); `write_report` renders a run folder into one self-contained
``report.html``.
"""

from ._report import write_report
from ._viewer import OverlayViewer

__all__ = ["OverlayViewer", "write_report"]
