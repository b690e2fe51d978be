"""Pictures: a topology drawn from its coordinates (or a spring layout when it has none), and
CDFs of normalized MLU for TensorBoard."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402

from topologies import Topology  # noqa: E402


def node_positions(topology: Topology) -> dict[str, tuple[float, float]]:
    """(x, y) per node: (longitude, latitude) when every node has coordinates."""
    if all(n.has_coordinates for n in topology.nodes):
        return {n.name: (n.longitude, n.latitude) for n in topology.nodes}
    graph = nx.Graph([(l.src, l.dst) for l in topology.links])
    return {k: tuple(v) for k, v in nx.spring_layout(graph, seed=0).items()}


def draw_topology(topology: Topology, path: str | Path, *, link_values: np.ndarray | None = None,
                  value_label: str = "utilization") -> Path:
    """Save a PNG of ``topology``: line width ~ capacity; colour = ``link_values`` when given."""
    path = Path(path)
    fig = topology_figure(topology, link_values=link_values, value_label=value_label)
    fig.savefig(path)
    plt.close(fig)
    return path


def link_segments(topology: Topology, pos: dict[str, tuple[float, float]],
                  offset: float = 0.004) -> np.ndarray:
    """(L, 2, 2) line segments, one per directed link, each moved to the right of its direction
    of travel by ``offset`` of the drawing's span: a link and its reverse are drawn side by side
    instead of one over the other (a hot direction hidden under a cool one)."""
    ends = np.array([[pos[link.src], pos[link.dst]] for link in topology.links], dtype=np.float64)
    points = ends.reshape(-1, 2)  # a Topology always has links (>= 2 nodes, strongly connected)
    span = np.maximum(points.max(axis=0) - points.min(axis=0), 1e-12)  # (x, y) extent of the drawing
    direction = (ends[:, 1] - ends[:, 0]) / span                         # in span units: x and y alike
    length = np.hypot(direction[:, 0], direction[:, 1])
    unit = np.divide(direction, length[:, None], out=np.zeros_like(direction), where=length[:, None] > 0)
    right = np.stack([unit[:, 1], -unit[:, 0]], axis=1) * offset * span  # back to data units
    return ends + right[:, None, :]


def topology_figure(topology: Topology, *, link_values: np.ndarray | None = None,
                    value_label: str = "utilization") -> plt.Figure:
    """The topology drawn from coordinates, each directed link its own line (a link and its
    reverse side by side, each to the right of its direction); coloured by ``link_values``."""
    pos = node_positions(topology)
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    caps = topology.capacities
    widths = 0.6 + 2.4 * (caps - caps.min()) / max(caps.max() - caps.min(), 1e-9)
    lines = LineCollection(link_segments(topology, pos), linewidths=widths, alpha=0.85, zorder=1,
                           capstyle="butt")
    if link_values is not None:
        values = np.asarray(link_values, dtype=np.float64)
        if values.shape != (topology.num_links,):
            raise ValueError(f"link_values has shape {values.shape}, the topology {topology.num_links} links")
        lines.set_array(values)
        lines.set_cmap("viridis")
        lines.set_norm(plt.Normalize(0, max(float(values.max()), 1e-12)))
        fig.colorbar(lines, ax=ax, label=value_label)
    else:
        lines.set_color("0.45")
    ax.add_collection(lines)
    xs, ys = zip(*(pos[n] for n in topology.node_names))
    ax.scatter(xs, ys, s=40 if topology.num_nodes <= 100 else 8, color="#d62728", zorder=2)
    if topology.num_nodes <= 60:
        names_at: dict[tuple[float, float], list[str]] = {}
        for name in topology.node_names:  # nodes at one place (a PoP's two routers) share one label
            names_at.setdefault(tuple(pos[name]), []).append(name)
        for place, names in names_at.items():
            ax.annotate(", ".join(names), place, fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.autoscale_view()
    geographic = all(n.has_coordinates for n in topology.nodes)
    ax.set_xlabel("longitude" if geographic else "")
    ax.set_ylabel("latitude" if geographic else "")
    ax.set_title(f"{topology.name}: {topology.num_nodes} nodes, {topology.num_links} directed links, each to the "
                 f"right of its direction\n(line width ~ capacity {caps.min() / 1e9:.3g}-{caps.max() / 1e9:.3g} Gb/s)")
    if not geographic:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def cdf_figure(values: dict[str, np.ndarray], *, xlabel: str = "normalized MLU (policy / optimum)",
               close_up: bool = True) -> plt.Figure:
    """Empirical CDFs, one line per name; the first name (the policy under review) is drawn
    thickest. Colours repeat only with another line style, so a dozen policies stay apart.
    ``close_up`` adds a panel framing the first policy's range, where the baselines that
    decide whether it is any good sit (a shortest path at 5x the optimum would squeeze them)."""
    ordered = {name: np.sort(np.asarray(x, dtype=np.float64)) for name, x in values.items()}
    panels = 2 if close_up and ordered else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), dpi=100, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    styles = ("-", "--", ":", "-.")
    for ax in axes[0]:
        for i, (name, x) in enumerate(ordered.items()):
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=name,
                    color=colours[i % len(colours)], linestyle=styles[(i // len(colours)) % len(styles)],
                    linewidth=2.4 if i == 0 else 1.3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of traffic matrices")
        ax.grid(alpha=0.3)
    if panels == 2:
        first_name, first = next(iter(ordered.items()))
        low, high = min(float(x[0]) for x in ordered.values()), float(first[-1])
        pad = max(high - low, 1e-3) * 0.05
        close = axes[0][1]
        close.set_xlim(low - pad, high + pad)
        close.set_title(f"close-up: {first_name}'s range", fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
