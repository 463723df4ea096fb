"""Erasing a customer: their rows in the lake and their cards' state in Redis.

The lake says which cards and transactions are the customer's (Redis keeps no index from a
customer to cards). Removed: the lake's ``transactions``, ``decisions`` and ``labels`` rows;
Redis's card states, seen ids, feature snapshots, labels, blocklist entries, remembered
alerts, parked dispositions and the merchants' markers of their transactions' labels. Kept:
merchants' day counts (aggregates of many customers) and the Kafka topics (their retention
removes them; they hold tokens only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.lake import tables as lk
from models.online import layout
from services.core.settings import RedisClient


@dataclass(frozen=True)
class Erased:
    customer: str  # its first name: the token
    cards: int
    transactions: int
    lake_rows: dict[str, int]
    redis_keys: int


def erase_customer(lake: lk.Lake, client: RedisClient, names: Sequence[str]) -> Erased:
    """Remove what the lake and Redis hold of the customer known by any of ``names`` (its
    token, and a foreign producer's raw id: ``Tokenizer.names``)."""
    rows: list[tuple[str, str, str]] = []
    if lake.files("transactions"):
        found = lk.connect(lake).execute(
            "SELECT DISTINCT card_id, transaction_id, merchant_id FROM transactions_all "
            "WHERE list_contains(?, customer_id)",
            [list(names)],
        )
        rows = [(str(card), str(tx), str(merchant)) for card, tx, merchant in found.fetchall()]
    cards, transactions = {card for card, _, _ in rows}, {tx for _, tx, _ in rows}
    removed = {
        "transactions": lake.erase("transactions", "customer_id", set(names)),
        "decisions": lake.erase("decisions", "transaction_id", transactions),
        "labels": lake.erase("labels", "customer_id", set(names)),
    }
    keys = [key for card in sorted(cards) for key in layout.card_keys(card)]
    keys += [key for tx in sorted(transactions)
             for key in (layout.alert_context(tx), layout.parked(tx))]  # fmt: skip
    keys += [layout.merchant_label(merchant, tx) for _, tx, merchant in sorted(rows)]
    deleted = int(client.delete(*keys)) if keys else 0
    return Erased(names[0], len(cards), len(transactions), removed, deleted)
