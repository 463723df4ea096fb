"""The strategy topic folded by the workers' rules, whoever wrote to it: the first document of
a version counts, a backdated or mislabelled one is refused, a tombstone revokes for good."""

from __future__ import annotations

from typing import Any

from stream_jobs import strategy as st
from stream_jobs.strategy_feed import LEAD_S, fold

NOW = 1_790_000_000_000


class _Message:
    """What the fold reads of a Kafka message."""

    def __init__(self, key: bytes | None, value: bytes | None, timestamp: int = NOW) -> None:
        self._key, self._value, self._timestamp = key, value, timestamp

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 1, self._timestamp


def _document(version: int, description: str = "", ahead_s: float = LEAD_S) -> bytes:
    return (
        st.Strategy(
            version=version, effective_from=NOW + int(ahead_s * 1000), description=description
        )
        .model_dump_json()
        .encode()
    )


def _fold(*messages: _Message) -> Any:
    return fold(messages)  # type: ignore[arg-type]


def test_the_first_document_of_a_version_counts() -> None:
    published = _fold(
        _Message(b"0000000001", _document(1, "alice")), _Message(b"0000000001", _document(1, "bob"))
    )
    assert published.documents[1].description == "alice"
    assert published.refused == ["version 1 again: the first one counts"]


def test_a_tombstone_revokes_for_good() -> None:
    published = _fold(
        _Message(b"0000000001", _document(1)),
        _Message(b"0000000001", None),
        _Message(b"0000000001", _document(1, "again")),
    )
    assert published.documents == {1: None}
    assert published.live == []
    assert published.latest == 1  # a revoked number is never given again


def test_hostile_messages_are_refused_with_their_reason() -> None:
    published = _fold(
        _Message(b"0000000002", _document(2, ahead_s=-60)),  # would rewrite what was decided
        _Message(b"0000000003", _document(4)),  # says another version than its key
        _Message(b"not-a-number", _document(5)),
        _Message(b"0000000006", b'{"rules": [{"id": "x"}]}'),
        _Message(b"0000000007", b"\xff\xfe"),
        _Message(b"0000000008", _document(8)),  # the control: a good one passes
    )
    assert list(published.documents) == [8]
    assert len(published.refused) == 5
    assert "in force before it was published" in published.refused[0]
    assert "its document says 4" in published.refused[1]
    assert "without a version number" in published.refused[2]
