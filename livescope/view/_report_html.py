"""HTML building blocks of the run report: escaping, number formatting, tables, styles.

Every string put into the page goes through `esc` (or a helper that calls it).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CSS",
    "MAX_TABLE_ROWS",
    "as_dict",
    "count",
    "esc",
    "fmt",
    "kv_table",
    "missing",
    "table",
    "value_range",
]

MAX_TABLE_ROWS = 100
"""Rows shown in a long table (the rest are counted below it)."""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#222;margin:0 auto;max-width:1100px;padding:0 20px 40px}
h1{font-size:22px;margin:24px 0 4px}h2{font-size:18px;margin:32px 0 8px;
border-bottom:2px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#666;margin:0 0 12px}nav a{margin-right:12px;color:#2166ac;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:260px}figure{margin:8px 0 16px}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:12px}.missing{background:#fff4e5;border-left:4px solid #f0a030;
padding:6px 10px}.ok{color:#1a9850;font-weight:600}.bad{color:#d73027;font-weight:600}
code{font-size:12px}
"""


def esc(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute (a lone surrogate becomes ``?``)."""
    text = str(value)
    if not text.isascii():
        # (a path's bytes that are not UTF-8 are read as lone surrogates, "caf\udce9":
        # UTF-8 cannot hold them, and writing the page raised, leaving no report)
        text = text.encode("utf-8", "replace").decode("utf-8")
    return html.escape(text, quote=True)


class Fixed(float):
    """A number shown with ``places`` decimals (`fmt`), e.g. a time in a long run.

    (At `fmt`'s 3 significant digits, firings at 11.50 h and 11.57 h both read
    "11.5"/"11.6", and 170.17 and 170.83 min "170"/"171".)
    """

    places: int

    def __new__(cls, value: float, places: int = 2) -> Fixed:
        self = super().__new__(cls, value)
        self.places = places
        return self


def fmt(value: Any, digits: int = 3) -> str:
    """Format a value for a table: ``—`` for missing, yes/no, thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, Fixed):
        return f"{value:,.{value.places}f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # (from 10**digits up, rounded ones included: 999.7 is "1,000", not "1e+03")
        text = f"{value:,.{digits}g}"
        return f"{value:,.0f}" if "e+" in text else text
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, digits) for v in value) or "—"
    return str(value)


def count(n: int, noun: str) -> str:
    """Say ``n`` of a noun, in the plural unless one: ``1 division``, ``3 tracks``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def value_range(values: Sequence[int]) -> str:
    """Format ``min–max`` of some counts (one number when all are equal)."""
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def as_dict(value: object) -> dict[str, Any]:
    """Return ``value`` if it is a dict, else an empty one (summary keys may be absent)."""
    return value if isinstance(value, dict) else {}


def missing(text: str) -> str:
    """Return a highlighted note saying what is missing."""
    return f'<p class="missing">{esc(text)}</p>'


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    cap: int | None = MAX_TABLE_ROWS,
    what: str = "rows",
) -> str:
    """Return a table (booleans as ✓/✗, numbers right-aligned), at most ``cap`` rows shown."""
    shown = rows if cap is None else rows[:cap]
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in shown:
        cells = []
        for v in row:
            if isinstance(v, bool):
                cls, text = ("ok", "✓") if v else ("bad", "✗")
                cells.append(f'<td class="{cls}">{text}</td>')
            elif isinstance(v, int | float) and not isinstance(v, bool):
                cells.append(f'<td class="num">{esc(fmt(v))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    out = f"<table><tr>{head}</tr>{''.join(body)}</table>"
    if len(shown) < len(rows):
        out += f"<p>Showing the first {len(shown)} of {len(rows)} {esc(what)}.</p>"
    return out


def kv_table(rows: Sequence[tuple[str, str]]) -> str:
    """Return a two-column table of names and values."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'
