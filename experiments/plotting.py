"""Pictures: a topology drawn from its coordinates (or a spring layout when it has none)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
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


def topology_figure(topology: Topology, *, link_values: np.ndarray | None = None,
                    value_label: str = "utilization") -> plt.Figure:
    """The topology drawn from coordinates; links coloured by ``link_values`` when given."""
    pos = node_positions(topology)
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    caps = topology.capacities
    widths = 0.8 + 3.2 * (caps - caps.min()) / max(caps.max() - caps.min(), 1e-9)
    values = link_values if link_values is not None else None
    cmap = plt.get_cmap("viridis")
    vmax = float(np.max(values)) if values is not None else 1.0
    for i, link in enumerate(topology.links):
        (x1, y1), (x2, y2) = pos[link.src], pos[link.dst]
        colour = cmap(values[i] / vmax) if values is not None and vmax > 0 else "0.45"
        ax.plot([x1, x2], [y1, y2], color=colour, linewidth=widths[i], alpha=0.8, zorder=1)
    xs, ys = zip(*(pos[n] for n in topology.node_names))
    ax.scatter(xs, ys, s=40 if topology.num_nodes <= 100 else 8, color="#d62728", zorder=2)
    if topology.num_nodes <= 60:
        for name in topology.node_names:
            ax.annotate(name, pos[name], fontsize=7, xytext=(3, 3), textcoords="offset points")
    if values is not None:
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, vmax))
        fig.colorbar(mappable, ax=ax, label=value_label)
    geographic = all(n.has_coordinates for n in topology.nodes)
    ax.set_xlabel("longitude" if geographic else "")
    ax.set_ylabel("latitude" if geographic else "")
    ax.set_title(f"{topology.name}: {topology.num_nodes} nodes, {topology.num_links} directed links "
                 f"(line width ~ capacity {caps.min() / 1e9:.3g}-{caps.max() / 1e9:.3g} Gb/s)")
    if not geographic:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def cdf_figure(values: dict[str, np.ndarray], *, xlabel: str = "normalized MLU (policy / optimum)") -> plt.Figure:
    """Empirical CDFs, one line per name (e.g. a learned policy against the baselines)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name, x in values.items():
        x = np.sort(np.asarray(x))
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of traffic matrices")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
