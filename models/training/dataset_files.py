"""Where a labelled events file keeps its labels: written by ``produce --out``, read by training.

Light to import (no pandas), so the producer client can use it without the train extra.
"""

from __future__ import annotations

from pathlib import Path


def labels_path(events: Path) -> Path:
    """Where the labels of an events file go: NAME.jsonl -> NAME.labels.csv beside it."""
    return events.with_name(events.stem + ".labels.csv")
