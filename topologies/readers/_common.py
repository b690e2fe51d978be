"""Shared helpers for the file readers: opening files with clear errors, numbers, delays."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

from ..geo import DEFAULT_DELAY_S, propagation_delay_s
from ..model import Link, Node, Topology, TopologyError


def read_text(path: str | Path) -> str:
    """The file's text (gzip-aware), or a TopologyError saying why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise TopologyError(f"{path}: no such file")
    if path.is_dir():
        raise TopologyError(f"{path}: is a directory, expected a file")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TopologyError(f"{path}: cannot read ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise TopologyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def parse_number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TopologyError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TopologyError(f"{where}: {what} {text!r} is not finite")
    return value


def delays_from_coordinates(
    nodes: dict[str, Node], edges: list[tuple[str, str]], default_s: float = DEFAULT_DELAY_S
) -> tuple[list[float], str]:
    """Propagation delay per edge and a note saying how many came from coordinates."""
    delays, measured = [], 0
    for a, b in edges:
        delay, from_coords = propagation_delay_s(nodes[a], nodes[b], default_s)
        delays.append(delay)
        measured += from_coords
    if measured == len(edges):
        note = "delay: great-circle distance / 2e8 m/s on every link"
    elif measured == 0:
        note = f"delay: no coordinates, default {default_s * 1e3:g} ms per link"
    else:
        note = (f"delay: great-circle distance on {measured} of {len(edges)} links, "
                f"default {default_s * 1e3:g} ms where an endpoint has no coordinates")
    return delays, note


def directed_links(
    edges: list[tuple[str, str]], capacities: list[float], delays: list[float],
    weights: list[float | None], *, directed: bool,
) -> list[Link]:
    """Links from edge lists; undirected edges become two directed links with the same attributes."""
    links: list[Link] = []
    for (a, b), cap, delay, weight in zip(edges, capacities, delays, weights):
        links.append(Link(a, b, cap, delay, weight))
        if not directed:
            links.append(Link(b, a, cap, delay, weight))
    return links


def build_topology(path: Path, name: str, nodes, links, notes) -> Topology:
    """Construct and validate; validation errors name the file they came from."""
    try:
        return Topology(name, tuple(nodes), tuple(links), tuple(notes))
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None
