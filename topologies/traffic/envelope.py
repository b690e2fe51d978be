"""How far traffic lies outside what a reference sequence (a policy's training traffic) held.

A learned routing is trustworthy on traffic like the traffic it learned from. The envelope is
the largest share of the total each origin–destination pair carried in that reference; a
matrix's *excess* is the share of its traffic above the envelope (0 when every pair stays
within what it reached before, up to 1). A controller falls back to classic routing while the
excess stays high (``agents.guard.DriftGuard``).

The threshold is taken from the reference alone: the reference is cut into blocks (days of a
week), each block is scored against the envelope of the others, and the threshold is the
largest score an unseen block of the same traffic reached. New traffic has to leave the
envelope by more than ordinary day-to-day change did to count as drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .model import TrafficError, TrafficSequence


def _shares(matrices: np.ndarray) -> np.ndarray:
    """(T, N, N) -> (T, N·N): each matrix over its total, the diagonal (traffic that never enters
    the network, as TrafficSequence drops it) left out; all zeros for an empty matrix."""
    matrices = np.array(matrices, dtype=np.float64)
    nodes = np.arange(matrices.shape[1])
    matrices[:, nodes, nodes] = 0.0
    flat = matrices.reshape(len(matrices), -1)
    totals = flat.sum(axis=1, keepdims=True)
    return np.divide(flat, totals, out=np.zeros_like(flat), where=totals > 0)


def _excess(top_share: np.ndarray, shares: np.ndarray) -> np.ndarray:
    return np.maximum(shares - top_share, 0.0).sum(axis=1)


def _check_window(window: int) -> None:
    if int(window) != window or window < 1:
        raise TrafficError(f"envelope window must be a whole number >= 1, got {window}")


def _window_scores(excess: np.ndarray, window: int) -> np.ndarray:
    """Median excess of every full window of ``window`` consecutive matrices."""
    windows = np.lib.stride_tricks.sliding_window_view(excess, window)
    return np.median(windows, axis=1)


@dataclass(frozen=True, eq=False)
class TrafficEnvelope:
    """Per-pair largest traffic share of a reference sequence, and the drift threshold.

    ``score(history)`` is the median excess of the last ``window`` matrices (the median so that
    one odd matrix does not count as drift); ``drifted(history)`` is ``score > threshold``.
    """

    top_share: np.ndarray  # (N, N) largest share of the total each pair carried
    threshold: float
    window: int = 3

    def __post_init__(self) -> None:
        top = np.array(self.top_share, dtype=np.float64, copy=True)
        if top.ndim != 2 or top.shape[0] != top.shape[1]:
            raise TrafficError(f"an envelope's top shares must be N x N, got shape {top.shape}")
        if not (np.isfinite(top).all() and (top >= 0).all() and (top <= 1).all()):
            raise TrafficError("an envelope's top shares must lie in [0, 1]")
        if not (np.isfinite(self.threshold) and 0 <= self.threshold <= 1):
            raise TrafficError(f"drift threshold must be a share in [0, 1], got {self.threshold}")
        _check_window(self.window)
        top.setflags(write=False)
        object.__setattr__(self, "top_share", top)
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "window", int(self.window))

    @classmethod
    def fit(cls, reference: TrafficSequence, *, window: int = 3, blocks: int = 7) -> "TrafficEnvelope":
        """The envelope of ``reference``, its threshold the largest window score of any of
        ``blocks`` contiguous blocks against the envelope of the others (7: a week's days)."""
        if int(blocks) != blocks or blocks < 2:
            raise TrafficError(f"drift calibration needs at least 2 blocks, got {blocks}")
        _check_window(window)  # before the window scores use it
        if len(reference) < blocks * window:
            raise TrafficError(f"traffic {reference.name!r} has {len(reference)} matrices; {blocks} blocks of "
                               f"at least window={window} matrices need {blocks * window}")
        shares = _shares(reference.matrices)
        bounds = np.linspace(0, len(shares), blocks + 1).round().astype(int)
        held_out_scores = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            others = np.concatenate([shares[:start], shares[end:]])
            held_out_scores.append(_window_scores(_excess(others.max(axis=0), shares[start:end]), window).max())
        n = reference.num_nodes
        return cls(shares.max(axis=0).reshape(n, n), float(max(held_out_scores)), window)

    @property
    def num_nodes(self) -> int:
        return self.top_share.shape[0]

    def excess(self, matrices: np.ndarray) -> np.ndarray:
        """(T, N, N) or (N, N) -> (T,) share of each matrix's traffic above the envelope."""
        matrices = np.asarray(matrices, dtype=np.float64)
        if matrices.ndim == 2:
            matrices = matrices[None]
        if matrices.ndim != 3 or matrices.shape[1:] != self.top_share.shape:
            raise TrafficError(f"matrices of shape {matrices.shape[1:] if matrices.ndim == 3 else matrices.shape} "
                               f"do not fit an envelope over {self.num_nodes} nodes")
        return _excess(self.top_share.ravel(), _shares(matrices))

    def score(self, history: np.ndarray) -> float:
        """Median excess of the last ``window`` matrices of ``history`` (oldest first)."""
        history = np.asarray(history)
        if history.ndim != 3 or len(history) < self.window:
            raise TrafficError(f"drift score needs the last {self.window} matrices, got shape {history.shape}")
        return float(np.median(self.excess(history[-self.window:])))

    def drifted(self, history: np.ndarray) -> bool:
        return self.score(history) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an exported policy's manifest carries it)."""
        return {"top_share": self.top_share.tolist(), "threshold": self.threshold, "window": self.window}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrafficEnvelope":
        missing = {"top_share", "threshold", "window"} - set(data)
        if missing:
            raise TrafficError(f"envelope is missing {', '.join(sorted(missing))}")
        return cls(np.asarray(data["top_share"], dtype=np.float64), float(data["threshold"]), int(data["window"]))
