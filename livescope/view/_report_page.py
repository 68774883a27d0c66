"""One report page being built: its sections, in order, and the plots in them (`ReportPage`)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from livescope.schema import LivescopeError

from . import _report_plots as plots
from ._report_data import RunData, finite_seconds
from ._report_html import CSS, esc, missing

__all__ = ["NO_RESULTS", "SECTION_ERRORS", "ReportPage"]

logger = logging.getLogger("livescope")

SECTION_ERRORS = (
    OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError,
    LivescopeError,
)  # fmt: skip
"""What reading a damaged part of a run folder may raise (a value of another type than
written, in a hand-edited or older file: AttributeError; a number no float holds, or an
infinite time point: OverflowError): that section says so."""
NO_RESULTS = "no analysis results (results/ is missing)"


class ReportPage:
    """The sections of one report and the plots in them."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        self.sections: list[tuple[str, str, str]] = []
        self.n_plots = 0
        times = [finite_seconds(f.get("sample_time_s")) for f in run.frames]
        # (finite ones only: one infinite or NaN time in the frame log, e.g. a replayed
        # dataset's broken timestamp, lost the decisions' timeline (an axis limit of inf)
        # and put every time axis in hours)
        self.max_time_s = max((t for t in times if t is not None), default=0.0)
        self.unit = plots.time_unit(self.max_time_s)

    def plot(self, png: bytes, *, alt: str, caption: str) -> str:
        """Return an inline PNG figure with its caption (and count it)."""
        self.n_plots += 1
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    def add(self, anchor: str, title: str, build: Callable[[ReportPage], str]) -> None:
        """Build one section; a damaged part of the run folder is reported, not raised."""
        t0 = time.perf_counter()
        try:
            body = build(self)
        except SECTION_ERRORS as exc:
            logger.warning("report section %r could not be drawn: %s", title, exc)
            body = missing(f"This section could not be drawn: {type(exc).__name__}: {exc}")
        logger.debug("report section %r: %.0f ms", title, 1000 * (time.perf_counter() - t0))
        self.sections.append((anchor, title, body))

    def html(self) -> str:
        """Return the whole page."""
        s = self.run.summary
        where = self.run.run_dir.resolve()
        # (the folder's own name: a report of "." had no name when the summary has no id)
        run_id = str(s.get("run_id") or where.name)
        nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in self.sections)
        body = "".join(
            f'<section id="{a}"><h2>{esc(t)}</h2>{b}</section>' for a, t, b in self.sections
        )
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        version = s.get("livescope_version", "")
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>Run report: {esc(run_id)}</title><style>{CSS}</style></head><body>"
            f"<h1>Run report: {esc(run_id)}</h1>"
            f'<p class="sub">{esc(where)} · report written {esc(made)}'
            f"{' · livescope ' + esc(version) if version else ''}</p>"
            f"<nav>{nav}</nav>{body}</body></html>\n"
        )
