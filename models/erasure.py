"""Erasing a customer: their rows in the lake and their cards' state in Redis.

The lake says which cards and transactions are the customer's (Redis keeps no index from a
customer to cards). Removed: the lake's ``transactions``, ``decisions`` and ``labels`` rows;
Redis's card histories, feature snapshots, labels, blocklist entries and remembered alerts.
Kept: merchants' label counts (aggregates of many customers) and the Kafka topics (their
retention removes them; they hold tokens only).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from models import lake as lk
from models import redis_layout as layout


@dataclass(frozen=True)
class Erased:
    customer: str  # the token
    cards: int
    transactions: int
    lake_rows: dict[str, int]
    redis_keys: int


def erase_customer(lake: lk.Lake, client: redis.Redis, customer_token: str) -> Erased:
    """Remove what the lake and Redis hold of the customer ``customer_token``."""
    rows: list[tuple[str, str]] = []
    if lake.files("transactions"):
        found = lk.connect(lake).execute(
            "SELECT DISTINCT card_id, transaction_id FROM transactions_all WHERE customer_id = ?",
            [customer_token],
        )
        rows = [(str(card), str(tx)) for card, tx in found.fetchall()]
    cards, transactions = {card for card, _ in rows}, {tx for _, tx in rows}
    removed = {
        "transactions": lake.erase("transactions", "customer_id", {customer_token}),
        "decisions": lake.erase("decisions", "transaction_id", transactions),
        "labels": lake.erase("labels", "customer_id", {customer_token}),
    }
    keys = [key for card in sorted(cards) for key in (
        layout.card_events(card), layout.card_features(card), layout.card_labels(card),
        layout.blocklist_card(card),
    )] + [layout.alert_context(tx) for tx in sorted(transactions)]  # fmt: skip
    deleted = int(client.delete(*keys)) if keys else 0
    return Erased(customer_token, len(cards), len(transactions), removed, deleted)
