"""What the benches share: the percentile they report and a free local port."""

from __future__ import annotations

import socket


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by nearest rank; NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def free_port() -> int:
    """A port on 127.0.0.1 free now (the OS picks it), for a server the bench starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
