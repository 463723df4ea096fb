"""A Redis Cluster node's port must leave room for its bus port (port + 10000) below 65536."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from services.devstack import processes, stack


def _held_low_port() -> Iterator[int]:
    """Real free ports whose bus port is free, so the chooser can accept them."""
    while True:
        port = processes.free_loopback_port()
        if port + stack.CLUSTER_BUS_OFFSET <= 65_535:
            yield port


def test_a_port_without_a_bus_port_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    good = next(_held_low_port())
    offered = iter([60_000, 65_000, 55_536, good])
    monkeypatch.setattr(processes, "free_loopback_port", lambda: next(offered))
    assert stack.cluster_node_port() == good


def test_a_port_whose_bus_port_is_taken_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        held_bus = holder.getsockname()[1]
        taken = held_bus - stack.CLUSTER_BUS_OFFSET
        good = next(p for p in _held_low_port() if p != taken)
        offered = iter([taken, good])
        monkeypatch.setattr(processes, "free_loopback_port", lambda: next(offered))
        # negative control: the held port is in the range, so only its bus port can refuse it
        assert taken > 0
        assert stack.cluster_node_port() == good


def test_chosen_ports_all_have_a_bus_port() -> None:
    ports = [stack.cluster_node_port() for _ in range(200)]
    assert all(p + stack.CLUSTER_BUS_OFFSET <= 65_535 for p in ports)
