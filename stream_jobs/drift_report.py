"""The HTML report of ``fraudstream models drift``: PSI of the score and of every feature, and
the histograms of the score and the most drifted features against the version's reference."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

from stream_jobs.report_html import (
    Chart,
    Html,
    e,
    figure_html,
    new_figure,
    page,
    png,
    table,
    use_agg,
)

DRAWN: Final = 6  # the most drifted features drawn
REFERENCE, OBSERVED = "#0072B2", "#E69F00"  # Okabe-Ito: apart for colour-blind readers


def _bin_labels(edges: list[float]) -> list[str]:
    """``(-inf, c0], (c0, c1], …, (c_last, inf)``, then the missing values' bin."""
    if not edges:
        return ["all", "missing"]
    inner = [f"{lo:.3g}..{hi:.3g}" for lo, hi in itertools.pairwise(edges)]
    return [f"\u2264{edges[0]:.3g}", *inner, f">{edges[-1]:.3g}", "missing"]


def _histogram(row: Mapping[str, Any]) -> Chart:
    """Reference and observed shares per reference bin (deciles of the training data)."""
    title = f"{row['name']}: PSI {row['psi']:.3f} ({row['level']})"
    figure = new_figure(7, 3)
    axes = figure.add_subplot()
    x = range(len(row["reference"]))
    axes.bar([i - 0.2 for i in x], row["reference"], width=0.4, color=REFERENCE, label="training")
    axes.bar([i + 0.2 for i in x], row["observed"], width=0.4, color=OBSERVED, label="range")
    axes.set_xticks(list(x), _bin_labels(row["edges"]), rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("share of rows")
    axes.legend()
    alt = f"Share of rows per bin of {row['name']}, training data against the range."
    return Chart(title, alt, "Bins: the version's reference, cut at its training deciles.",
                 png=png(figure))  # fmt: skip


def render(result: Mapping[str, Any]) -> str:
    use_agg()
    span = result["range"]
    rows = [result["score"], *result["features"]]
    grid = table(["", "PSI", "level"], [[r["name"], f"{r['psi']:.4f}", r["level"]] for r in rows])
    drawn = [result["score"], *result["features"][:DRAWN]]
    body = "".join((
        f"<h1>Drift of {e(result['version'])}</h1>",
        f'<p class="run">{e(span["from"])} to {e(span["to"])} (exclusive): '
        f"{result['rows']:,} transactions against the version's training data. PSI "
        f"{result['thresholds']['warn']} and over warns, {result['thresholds']['page']} and "
        "over pages, as the alerts do.</p>",
        "<h2>Population stability index</h2>", Html(grid),
        "<h2>Histograms</h2>", *(figure_html(_histogram(r)) for r in drawn),
    ))  # fmt: skip
    return page(f"Drift of {result['version']}", body)
