"""The pieces of the project's self-contained HTML reports (backtests, model comparisons,
drift, model cards): one escaping point, tables, charts as PNG ``data:`` URIs drawn with
matplotlib's Agg backend, and the page around them. No report loads anything from the network.

Every string of a result is escaped at one place, ``e``: names and descriptions are user input.
Markup built here is an ``Html`` and passes through unchanged.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Html(str):
    """Markup a report built: ``e`` passes it through instead of escaping it again."""

    __slots__ = ()


def e(value: object) -> Html:
    """Escape text for HTML (quotes too: the text may land in an attribute)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def table(
    headers: Sequence[object], rows: Sequence[Sequence[object]], text: Collection[int] = (0,)
) -> Html:
    """A table whose columns are numbers (right-aligned) except those in ``text``."""

    def cell(tag: str, i: int, value: object) -> str:
        kind = "" if i in text else ' class="num"'
        scope = ' scope="col"' if tag == "th" else ""
        return f"<{tag}{kind}{scope}>{e(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


@dataclass(frozen=True)
class Chart:
    """One chart: its PNG, or why there is none (then the page says so instead)."""

    title: str
    alt: str
    caption: str
    png: bytes | None = None
    missing: str = ""


def figure_html(chart: Chart) -> Html:
    """The chart under its heading, or the sentence saying why it is left out."""
    if chart.png is None:
        return Html(f'<h3>{e(chart.title)}</h3><p class="missing">{e(chart.missing)}</p>')
    data = base64.b64encode(chart.png).decode("ascii")
    return Html(
        f"<h3>{e(chart.title)}</h3><figure>"
        f'<img src="data:image/png;base64,{data}" alt="{e(chart.alt)}">'
        f"<figcaption>{e(chart.caption)}</figcaption></figure>"
    )


def plain(text: str) -> str:
    """Text matplotlib draws as written: a ``$`` would start mathtext (and can fail to parse),
    and a leading underscore hides a legend entry."""
    text = text.replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes, without the Software tag (the page names no URL)."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def new_figure(width: float, height: float) -> Figure:
    """A figure not registered with pyplot: no global state, nothing to close."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


STYLE: Final = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 28px 64px;background:#fff}
h1{font-size:1.6em;margin:0 0 .3em}h2{margin-top:2em;border-bottom:1px solid #ddd}
h3{margin:1.4em 0 .4em}
.run{color:#555;margin-top:0}
.note{background:#fff8e1;border-left:4px solid #f0ad00;padding:10px 14px}
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right;white-space:nowrap}
.wide{overflow-x:auto}
code{font-size:.85em;color:#666}
.bar{display:inline-block;height:.8em;background:#0072B2;min-width:1px}
figure{margin:0}img{max-width:100%;height:auto}
figcaption,.caption{color:#555;font-size:.9em}
.missing{color:#8a4b00;font-style:italic}
"""


def page(title: str, body: str) -> str:
    """One self-contained HTML page."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def use_agg() -> None:
    """No display: the PNGs go into the page."""
    import matplotlib

    matplotlib.use("Agg")
