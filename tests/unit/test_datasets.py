"""Both file formats besides the generator's load and train: the public card CSV, and the
anonymised Time/V1..V28/Amount/Class format (per-row features only)."""

from __future__ import annotations

import csv
import gzip
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.features import offline
from models.features.definitions import ANONYMISED_FEATURE_NAMES, FEATURE_NAMES
from models.training.datasets import after_history, load
from models.training.trainer import train
from services.core.card_csv import CATEGORY_TO_MCC, REQUIRED_COLUMNS
from services.generator import GeneratorConfig, Labelled, generate
from tests.unit.test_training import FAST

MCC_TO_CATEGORY = {mcc: name for name, mcc in CATEGORY_TO_MCC.items()}


def write_card_csv(path: Path, items: list[Labelled], bare: bool = False) -> Path:
    """The items in the public card-CSV layout (gzipped for a ``.gz`` name); ``bare``: no
    category and no coordinates, as in the handbook's data set."""
    gz = path.name.endswith(".gz")
    with gzip.open(path, "wt", newline="") if gz else path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *REQUIRED_COLUMNS, "first", "dob"])
        for n, item in enumerate(items):
            tx = item.transaction
            when = datetime.fromtimestamp(tx.event_time_ms // 1000, UTC)
            category = "" if bare else MCC_TO_CATEGORY.get(tx.merchant_category, "misc_pos")
            place = ("", "") if bare else (tx.lat, tx.lon)
            writer.writerow([
                n, when.strftime("%Y-%m-%d %H:%M:%S"), tx.card_id, f"fraud_{tx.merchant_id}",
                category, tx.amount, "", "", *place, tx.transaction_id, "",
                int(item.is_fraud), "Jane", "1980-01-01",
            ])  # fmt: skip
    return path


def test_public_card_csv_trains_with_transaction_features(tmp_path: Path) -> None:
    items = list(generate(GeneratorConfig(seed=4, customers=800, fraud_rate=0.05), 30_000))
    path = write_card_csv(tmp_path / "cards.csv", items)
    dataset = load(path)
    assert dataset.kind == "transactions"
    assert len(dataset.frame) == len(items)
    assert dataset.frame["is_fraud"].sum() == sum(i.is_fraud for i in items)
    assert "first" not in dataset.frame.columns  # personal columns never enter
    trained = train(dataset, FAST)
    assert trained.metadata["feature_names"] == list(FEATURE_NAMES)
    assert trained.metrics.pr_auc > 0.3


def test_a_gzipped_csv_without_categories_or_places_loads_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    items = list(generate(GeneratorConfig(seed=5, customers=300, fraud_rate=0.05), 6_000))
    earlier = load(write_card_csv(tmp_path / "earlier.csv.gz", items[:4_000], bare=True))
    later = load(write_card_csv(tmp_path / "later.csv.gz", items[4_000:], bare=True))
    assert len(later.frame) == 2_000
    assert later.frame["lat"].isna().all()
    assert (later.frame["merchant_category"] == "5999").all()
    both = after_history(earlier, later)
    alone = offline.compute(later.frame)["count_30d"].to_numpy()
    seen = offline.compute(both.frame)["count_30d"].to_numpy()[both.frame["history"].eq(False)]
    assert (seen >= alone).all()
    assert (seen > alone).mean() > 0.5


def test_anonymised_format_trains_on_per_row_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 20_000
    fraud = rng.random(rows) < 0.03
    v = rng.normal(0, 1, (rows, 28))
    v[fraud, 0] += 3.0  # the fraud signal lives in V1, as PCA components carry it there
    path = tmp_path / "anonymised.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"])
        for i in range(rows):
            writer.writerow(
                [i * 8, *v[i].round(6), round(float(rng.gamma(2, 40)), 2), int(fraud[i])]
            )
    dataset = load(path)
    assert dataset.kind == "anonymised"
    assert dataset.feature_names == ANONYMISED_FEATURE_NAMES
    trained = train(dataset, FAST)
    assert trained.metadata["kind"] == "anonymised"
    assert trained.metrics.pr_auc > 0.5
