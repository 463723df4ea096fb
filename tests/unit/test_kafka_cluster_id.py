"""The local Apache Kafka's cluster id: a value the storage tool takes as one, every time."""

from __future__ import annotations

import base64
import re

from services.devstack.kafka_broker import new_cluster_id


def test_cluster_ids_are_kafka_s_form_and_never_look_like_an_option() -> None:
    """One random id in 64 starts with "-" (base64url of 16 random bytes); 5,000 draws
    would meet about 78 of them, so a generator that let them through fails here."""
    ids = [new_cluster_id() for _ in range(5_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    assert len(base64.urlsafe_b64decode(ids[0] + "==")) == 16
    assert len(set(ids)) == len(ids)
