"""Path selection (congestion-aware routing): flows (origin, destination, rate) arrive one
at a time and the agent puts each on one of its pair's K candidate paths. An episode routes
one traffic matrix: each pair's demand becomes ``flows_per_pair`` equal flows, in random order.

Utilizations are reported relative to a reference ``u_ref`` of the episode's matrix: its
optimal MLU when the optima are given, else the MLU of an equal split over the paths, so
that what the agent sees does not depend on the traffic's units or level.

Observation (float32): link utilization so far ÷ u_ref (E), then per candidate path the
bottleneck utilization it would have with this flow on it ÷ u_ref (K; 0 for a missing
path), whether the path exists (K), the flow's rate over the smallest capacity on its
first path ÷ u_ref (1), one-hot origin and destination (2N), and the fraction of flows
already routed (1). Values above ``OBSERVATION_CAP`` are clipped.

Action: Discrete(K). A pair with fewer than K paths maps action a to path a mod (its count).

Reward: −(C after − C before) ÷ u_ref − ``bottleneck_weight`` × (bottleneck of the chosen
path ÷ u_ref), where C is the ``utilization_norm``-norm of the link utilizations: the MLU
with the default ∞. With ``bottleneck_weight=0`` an undiscounted episode return is exactly
−final C ÷ u_ref: −final MLU ÷ u_ref by default, the objective. A finite norm (4, say)
charges every flow for the load it adds, weighted towards busy links, where the MLU charges
only the few flows that raise the maximum: a denser signal for the same goal, since the
p-norm tends to the maximum as p grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from topologies import PathSet, Topology, TrafficSequence

from .backend import Backend
from .common import check_optimal_mlu, equal_split_mlu, resolve_backend, resolve_network

OBSERVATION_CAP = 10.0


def norm_order(value: float, name: str = "order") -> float:
    """``value`` as the order p of a p-norm (>= 1; inf: the maximum), or a ValueError naming ``name``."""
    if not value >= 1:  # also refuses NaN
        raise ValueError(f"{name} must be >= 1 (inf: the maximum, the MLU), got {value!r}")
    return float(value)


class PathSelectionEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(
        self,
        topology: Topology | str = "abilene",
        traffic: TrafficSequence | np.ndarray | str = "abilene-train",
        *,
        k: int = 4,
        metric: str = "hop",
        flows_per_pair: int = 1,
        bottleneck_weight: float = 0.0,
        utilization_norm: float = np.inf,
        optimal_mlu: np.ndarray | None = None,
        backend: str | Backend = "twin",
        pathset: PathSet | None = None,
        traffic_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(flows_per_pair, (int, np.integer)) or flows_per_pair < 1:
            raise ValueError(f"flows_per_pair must be an integer >= 1, got {flows_per_pair!r}")
        if bottleneck_weight < 0:
            raise ValueError(f"bottleneck_weight must be >= 0, got {bottleneck_weight!r}")
        norm_order(utilization_norm, "utilization_norm")
        self.topology, self.traffic, self.pathset = resolve_network(topology, traffic, k, metric, pathset,
                                                                    traffic_options)
        self.flows_per_pair, self.bottleneck_weight = int(flows_per_pair), float(bottleneck_weight)
        self.utilization_norm = float(utilization_norm)
        # Steps score choices on the flows placed so far (what a controller admitting flows knows);
        # the finished episode's routing is run on the backend, and info reports what it measured.
        self.backend, self._owns_backend = resolve_backend(backend, self.pathset)
        self.optimal_mlu = check_optimal_mlu(optimal_mlu, len(self.traffic))
        ps, topo = self.pathset, self.topology
        self.demands = ps.demands(self.traffic.matrices)
        self.capacities = topo.capacities
        # (P, K, L) link indices of every path, padded with a sentinel link of infinite capacity
        self._sentinel = topo.num_links
        self._path_links = ps.link_table
        # (P, K) the path each action puts a pair's flow on: a pair with fewer than K paths repeats them
        self._action_paths = np.arange(ps.k)[None, :] % ps.mask.sum(axis=1)[:, None]
        self._action_paths.setflags(write=False)
        self._capacity_ext = np.append(self.capacities, np.inf)
        self._first_path_capacity = self._capacity_ext[self._path_links[:, 0]].min(axis=1)
        self._equal_mlu = equal_split_mlu(ps, self.demands)  # (T,)
        n, e, kk = topo.num_nodes, topo.num_links, ps.k
        self.observation_space = spaces.Box(0.0, OBSERVATION_CAP, shape=(e + 2 * kk + 2 + 2 * n,), dtype=np.float32)
        self.action_space = spaces.Discrete(kk)
        self._flows = np.zeros((0, 2))
        self._position = self._t = 0
        self._loads = np.zeros(e + 1)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        t = int(self.np_random.integers(len(self.traffic)))
        if options and "tm_index" in options:
            t = int(options["tm_index"])
            if not 0 <= t < len(self.traffic):
                raise ValueError(f"tm_index must be in [0, {len(self.traffic) - 1}], got {t}")
        pairs = np.flatnonzero(self.demands[t] > 0)
        if len(pairs) == 0:
            raise ValueError(f"traffic matrix {t} of {self.traffic.name!r} carries no demand")
        pair_of_flow = np.repeat(pairs, self.flows_per_pair)
        rate = self.demands[t][pair_of_flow] / self.flows_per_pair
        order = self.np_random.permutation(len(pair_of_flow))
        self._flows = np.stack([pair_of_flow[order], rate[order]], axis=1)
        self._chosen = np.zeros((self.pathset.num_pairs, self.pathset.k))
        self._t, self._position = t, 0
        self._loads = np.zeros(self.topology.num_links + 1)
        self._congestion_now = 0.0  # the reward's measure of the loads so far (kept, not recomputed per step)
        self._reference = float(self.optimal_mlu[t]) if self.optimal_mlu is not None else float(self._equal_mlu[t])
        return self._observation(), {"tm_index": t, "flows": len(self._flows)}

    def step(self, action):
        pair, rate = self.current_flow
        path = self.path_index(pair, int(action))
        before = self._congestion_now
        links = self._path_links[pair, path]
        np.add.at(self._loads, links, rate)
        self._loads[self._sentinel] = 0.0
        self._chosen[pair, path] += rate
        after = self._mlu()
        self._congestion_now = after if self.utilization_norm == np.inf else self._congestion()
        bottleneck = float((self._loads[links] / self._capacity_ext[links]).max())
        reward = (-(self._congestion_now - before) / self._reference
                  - self.bottleneck_weight * bottleneck / self._reference)
        self._position += 1
        done = self._position >= len(self._flows)
        info = {"tm_index": self._t, "path": path, "mlu": after}
        if done:
            info["final_mlu"] = after
            if self.optimal_mlu is not None:
                info["normalized_mlu"] = after / float(self.optimal_mlu[self._t])
            measured = self.backend.run(self.demands[self._t], self.episode_ratios())
            info["measured_mlu"] = measured.mlu
            info["delivered_fraction"] = measured.delivered_fraction
        return self._observation(), float(reward), done, False, info

    # ------------------------------------------------------------------ helpers
    @property
    def tm_index(self) -> int:
        """Index of the traffic matrix this episode routes."""
        return self._t

    @property
    def routed(self) -> int:
        """Flows already given a path in this episode."""
        return self._position

    @property
    def num_flows(self) -> int:
        """Flows this episode routes in all."""
        return len(self._flows)

    @property
    def current_flow(self) -> tuple[int, float]:
        """(pair index, rate in bit/s) of the flow waiting for a path."""
        return int(self._flows[self._position, 0]), float(self._flows[self._position, 1])

    @property
    def reference(self) -> float:
        """``u_ref``: the utilization this episode's observations are relative to."""
        return self._reference

    def utilization(self) -> np.ndarray:
        """(E,) link utilization of the flows placed so far."""
        return self._loads[:-1] / self.capacities

    def action_paths(self, pair: int) -> np.ndarray:
        """(K,) the path each action puts ``pair``'s flow on (a pair with fewer than K paths repeats them)."""
        return self._action_paths[pair]

    def candidate_links(self, pair: int) -> np.ndarray:
        """(K, L) link indices of each action's path (padded with ``num_links``), as :meth:`action_paths` maps them."""
        return self._path_links[pair, self.action_paths(pair)]

    def episode_ratios(self) -> np.ndarray:
        """(P, K) share of each pair's demand placed on each path so far (first path for unplaced pairs)."""
        totals = self._chosen.sum(axis=1, keepdims=True)
        ratios = np.divide(self._chosen, totals, out=np.zeros_like(self._chosen), where=totals > 0)
        ratios[totals[:, 0] == 0, 0] = 1.0
        return ratios

    def close(self) -> None:
        if self._owns_backend:
            self.backend.close()
        super().close()

    def path_index(self, pair: int, action: int) -> int:
        if not 0 <= action < self.pathset.k:
            raise ValueError(f"action must be in [0, {self.pathset.k - 1}], got {action}")
        return int(self._action_paths[pair, action])

    def candidate_bottlenecks(self) -> np.ndarray:
        """(K,) utilization of each candidate path's busiest link if the current flow took it
        (inf for missing paths); zeros once the episode is over."""
        if self._position >= len(self._flows):
            return np.zeros(self.pathset.k)
        pair, _ = self.current_flow
        _, with_flow = self._candidate_link_utilization()
        return np.where(self.pathset.mask[pair], with_flow.max(axis=1), np.inf)

    def candidate_congestion_increases(self, order: float | None = None) -> np.ndarray:
        """(K,) how much each candidate path would raise the ``order``-norm of the link
        utilizations if the current flow took it (inf for missing paths); zeros once the
        episode is over. ``order`` defaults to ``utilization_norm``: the step reward's first
        term times −u_ref."""
        return self.candidate_effects(order)[1]

    def candidate_effects(self, order: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`candidate_bottlenecks` and :meth:`candidate_congestion_increases` from one
        look at the candidate paths' links (the graph observation shows both on every flow)."""
        if self._position >= len(self._flows):
            return np.zeros(self.pathset.k), np.zeros(self.pathset.k)
        order = self.utilization_norm if order is None else norm_order(order)
        pair, _ = self.current_flow
        now, with_flow = self._candidate_link_utilization()
        bottleneck = with_flow.max(axis=1)
        current = self._congestion(order)
        # only the path's links change: update the norm from them instead of every link (O(K·L), not O(K·E))
        if order == np.inf:
            raised = np.maximum(bottleneck, current)
        else:
            rest = np.maximum(current ** order - (now ** order).sum(axis=1), 0.0)  # rounding may go below 0
            raised = (rest + (with_flow ** order).sum(axis=1)) ** (1.0 / order)
        present = self.pathset.mask[pair]
        return np.where(present, bottleneck, np.inf), np.where(present, raised - current, np.inf)

    def _candidate_link_utilization(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, L) utilization of each candidate path's links now and with the current flow on
        that path (0 on the padding)."""
        pair, rate = self.current_flow
        links = self._path_links[pair]                                  # (K, L)
        capacity = self._capacity_ext[links]                            # sentinel: inf
        return self._loads[links] / capacity, (self._loads[links] + rate) / capacity

    def _mlu(self) -> float:
        return float(self.utilization().max())

    def _congestion(self, order: float | None = None) -> float:
        """The ``order``-norm of the link utilizations (default ``utilization_norm``; ∞: the MLU)."""
        order = self.utilization_norm if order is None else order
        return self._mlu() if order == np.inf else float(np.linalg.norm(self.utilization(), ord=order))

    def _observation(self) -> np.ndarray:
        ps, n = self.pathset, self.topology.num_nodes
        util = self.utilization() / self._reference
        if self._position < len(self._flows):
            pair, rate = self.current_flow
            mask = ps.mask[pair]
            bottleneck = np.where(mask, self.candidate_bottlenecks() / self._reference, 0.0)
            size = rate / self._first_path_capacity[pair] / self._reference
            origin, destination = ps.pairs[pair]
        else:
            mask, bottleneck, size, origin, destination = np.zeros(ps.k, bool), np.zeros(ps.k), 0.0, -1, -1
        endpoints = np.zeros(2 * n)
        if origin >= 0:
            endpoints[origin], endpoints[n + destination] = 1.0, 1.0
        progress = self._position / max(1, len(self._flows))
        observation = np.concatenate([util, bottleneck, mask.astype(np.float64), [size], endpoints, [progress]])
        return np.clip(observation, 0.0, OBSERVATION_CAP).astype(np.float32)
