"""Drift detection on measured traffic matrices: standard statistics next to the envelope.

The envelope (:class:`topologies.TrafficEnvelope`) asks whether pairs carry more of the total
than they ever did in training. :class:`DriftDetector` adds two standard two-sample statistics
on the *distribution of traffic over pairs* (each matrix over its total, the diagonal left out):

* **KS**: for every pair, the two-sample Kolmogorov–Smirnov statistic between the pair's shares
  in the recent window (the last ``window`` matrices) and its shares in training; the score is
  the mean of that statistic over the pairs (0: every pair's shares look like training, 1: every
  pair lies wholly outside the range it had). Training is kept as ``levels`` quantiles of each
  pair's shares (a manifest carries 132 × 100 numbers for Abilene, not the week).
* **JS**: the Jensen–Shannon *distance* (``scipy.spatial.distance.jensenshannon`` with
  ``base=2``, not squared: the square root of the divergence, in [0, 1]) between the recent
  window's mean share vector and the training mean share vector.

Each threshold is calibrated on the training matrices alone, held out block-wise as the
envelope's is: the training sequence is cut into ``blocks`` contiguous blocks (7: the days of
a week); for each block, the reference (mean shares, per-pair quantiles) is fitted on the other
blocks and every full window inside the held-out block is scored; the threshold is the
``quantile`` (default 0.995) of all those held-out window scores. A statistic therefore has to
move further than ordinary day-to-day change did, not just further than the fit's own data.

The detector combines: it reports drift when any statistic (KS, JS, and the envelope score if
an envelope is given) is above its threshold in each of the last ``consecutive`` windows
(default 2). Why 2: one window above a 0.995 quantile is expected about once every 200 normal
decisions (about once in 17 hours at 5-minute matrices), and a single odd matrix (a burst, a
measurement glitch) can push one window over; asking for two in a row costs one matrix (5
minutes) of delay on a real shift, which stays above the threshold anyway.

numpy and scipy only: the controller imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

from topologies import TrafficEnvelope, TrafficError, TrafficSequence

STATISTICS = ("ks", "js", "envelope")


def pair_shares(matrices: np.ndarray) -> np.ndarray:
    """(T, N, N) or (N, N) -> (T, N·(N-1)): each matrix's off-diagonal pairs over its total
    (row-major, the diagonal left out); all zeros for an empty matrix."""
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.ndim == 2:
        matrices = matrices[None]
    if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
        raise TrafficError(f"expected matrices of shape (T, N, N), got {matrices.shape}")
    n = matrices.shape[1]
    flat = matrices[:, ~np.eye(n, dtype=bool)]
    totals = flat.sum(axis=1, keepdims=True)
    return np.divide(flat, totals, out=np.zeros_like(flat), where=totals > 0)


def share_quantiles(shares: np.ndarray, levels: int) -> np.ndarray:
    """(T, P) -> (P, levels): each pair's shares at the mid-quantiles (k + 0.5) / levels, sorted;
    a sample of ``levels`` points standing in for the pair's T shares."""
    return np.quantile(shares, (np.arange(levels) + 0.5) / levels, axis=0).T.copy()


def ks_per_pair(window: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic per pair between ``window`` (W, P) and ``reference`` (P, Q),
    each row of ``reference`` sorted: the largest gap between the two empirical CDFs.

    The gap is constant between consecutive points of either sample, so it is enough to look at
    the window's points, just at and just below each (right and left limits)."""
    w, p = window.shape
    q = reference.shape[1]
    # all pairs in one searchsorted: shares lie in [0, 1], so pair k's values are shifted to [2k, 2k+1]
    shift = 2.0 * np.arange(p)
    flat_ref = (reference + shift[:, None]).ravel()
    points = np.sort(window.T, axis=1) + shift[:, None]  # (P, W), sorted within each row and overall
    flat_points = points.ravel()
    ref_base = q * np.arange(p)[:, None]
    win_base = w * np.arange(p)[:, None]
    ref_at = (np.searchsorted(flat_ref, points, "right") - ref_base) / q
    ref_below = (np.searchsorted(flat_ref, points, "left") - ref_base) / q
    win_at = (np.searchsorted(flat_points, points, "right") - win_base) / w
    win_below = (np.searchsorted(flat_points, points, "left") - win_base) / w
    return np.maximum(np.abs(win_at - ref_at), np.abs(win_below - ref_below)).max(axis=1)


def ks_score(window: np.ndarray, reference: np.ndarray) -> float:
    """Mean over pairs of the per-pair KS statistic."""
    return float(ks_per_pair(window, reference).mean())


def js_score(window: np.ndarray, mean_share: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, not squared) between the window's mean share vector and
    ``mean_share``."""
    recent = window.mean(axis=0)
    if recent.sum() <= 0:
        return 0.0
    return float(jensenshannon(recent, mean_share, base=2))


def _as_matrices(traffic: TrafficSequence | np.ndarray) -> np.ndarray:
    matrices = traffic.matrices if isinstance(traffic, TrafficSequence) else np.asarray(traffic, dtype=np.float64)
    if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
        raise TrafficError(f"expected matrices of shape (T, N, N), got {matrices.shape}")
    return matrices


def _check_whole(name: str, value: Any, least: int) -> int:
    if int(value) != value or value < least:
        raise TrafficError(f"drift {name} must be a whole number >= {least}, got {value}")
    return int(value)


@dataclass(frozen=True, eq=False)
class DriftDetector:
    """Training distribution of traffic over pairs, and calibrated KS / JS thresholds.

    ``mean_share`` (P,) is the training mean share per off-diagonal pair (row-major), ``reference``
    (P, levels) each pair's training share quantiles. ``envelope`` (optional) is scored alongside
    with its own threshold. :meth:`score` scores the last window; :meth:`drifted` needs the last
    ``history`` matrices to check ``consecutive`` windows.
    """

    num_nodes: int
    mean_share: np.ndarray
    reference: np.ndarray
    ks_threshold: float
    js_threshold: float
    window: int = 6
    consecutive: int = 2
    quantile: float = 0.995
    envelope: TrafficEnvelope | None = None

    def __post_init__(self) -> None:
        n = _check_whole("num_nodes", self.num_nodes, 2)
        pairs = n * (n - 1)
        mean = np.array(self.mean_share, dtype=np.float64, copy=True)
        reference = np.array(self.reference, dtype=np.float64, copy=True)
        if mean.shape != (pairs,) or reference.ndim != 2 or reference.shape[0] != pairs or reference.shape[1] < 1:
            raise TrafficError(f"a drift reference over {n} nodes needs {pairs} mean shares and ({pairs}, levels) "
                               f"quantiles, got {mean.shape} and {reference.shape}")
        for name, values in (("mean shares", mean), ("share quantiles", reference)):
            if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
                raise TrafficError(f"drift {name} must lie in [0, 1]")
        if (np.diff(reference, axis=1) < 0).any():
            raise TrafficError("drift share quantiles must be sorted per pair")
        for name in ("ks_threshold", "js_threshold"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value <= 1):
                raise TrafficError(f"drift {name} must lie in [0, 1], got {value}")
            object.__setattr__(self, name, float(value))
        if not 0 < self.quantile <= 1:
            raise TrafficError(f"drift quantile must lie in (0, 1], got {self.quantile}")
        if self.envelope is not None and self.envelope.num_nodes != n:
            raise TrafficError(f"the envelope covers {self.envelope.num_nodes} nodes, the detector {n}")
        mean.setflags(write=False)
        reference.setflags(write=False)
        object.__setattr__(self, "num_nodes", n)
        object.__setattr__(self, "mean_share", mean)
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "window", _check_whole("window", self.window, 1))
        object.__setattr__(self, "consecutive", _check_whole("consecutive", self.consecutive, 1))
        object.__setattr__(self, "quantile", float(self.quantile))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, training: TrafficSequence | np.ndarray, *, window: int = 6, blocks: int = 7,
            quantile: float = 0.995, consecutive: int = 2, levels: int = 100,
            envelope: TrafficEnvelope | None = None) -> DriftDetector:
        """Reference from all of ``training`` (T, N, N); thresholds from its ``blocks`` held out in
        turn (see the module doc). ``envelope``, if given, is kept as it is (its own threshold)."""
        matrices = _as_matrices(training)
        window = _check_whole("window", window, 1)
        blocks = _check_whole("calibration blocks", blocks, 2)
        levels = _check_whole("levels", levels, 1)
        if len(matrices) < blocks * window:
            raise TrafficError(f"{len(matrices)} training matrices; {blocks} blocks of at least window={window} "
                               f"matrices need {blocks * window}")
        shares = pair_shares(matrices)
        held_out = calibration_scores(shares, window=window, blocks=blocks, levels=levels)
        return cls(matrices.shape[1], shares.mean(axis=0), share_quantiles(shares, levels),
                   float(np.quantile(held_out["ks"], quantile)), float(np.quantile(held_out["js"], quantile)),
                   window, consecutive, quantile, envelope)

    # ------------------------------------------------------------------ scoring
    @property
    def history(self) -> int:
        """Matrices :meth:`drifted` needs: ``consecutive`` windows of the longest statistic."""
        longest = max(self.window, self.envelope.window if self.envelope is not None else 1)
        return longest + self.consecutive - 1

    @property
    def thresholds(self) -> dict[str, float]:
        out = {"ks": self.ks_threshold, "js": self.js_threshold}
        if self.envelope is not None:
            out["envelope"] = float(self.envelope.threshold)
        return out

    def _check(self, recent: np.ndarray, need: int) -> np.ndarray:
        recent = np.asarray(recent, dtype=np.float64)
        if recent.ndim != 3 or recent.shape[1:] != (self.num_nodes, self.num_nodes) or len(recent) < need:
            raise TrafficError(f"drift detection over {self.num_nodes} nodes needs the last {need} matrices, "
                               f"got shape {recent.shape}")
        return recent

    def statistics(self, recent: np.ndarray) -> dict[str, float]:
        """KS, JS (and envelope) scores of the last window of ``recent`` (T, N, N), oldest first."""
        need = max(self.window, self.envelope.window if self.envelope is not None else 1)
        recent = self._check(recent, need)
        shares = pair_shares(recent[-self.window:])
        out = {"ks": ks_score(shares, self.reference), "js": js_score(shares, self.mean_share)}
        if self.envelope is not None:
            out["envelope"] = self.envelope.score(recent)
        return out

    def score(self, recent: np.ndarray) -> dict[str, dict[str, float | bool]]:
        """Each statistic of the last window with its threshold and whether it is above it."""
        thresholds = self.thresholds
        return {name: {"score": value, "threshold": thresholds[name], "above": bool(value > thresholds[name])}
                for name, value in self.statistics(recent).items()}

    def drifted(self, recent: np.ndarray) -> tuple[bool, list[str]]:
        """Whether any statistic was above its threshold in each of the last ``consecutive``
        windows, and which did; ``recent`` holds at least :attr:`history` matrices."""
        recent = self._check(recent, self.history)
        thresholds = self.thresholds
        fired = set(thresholds)
        for back in range(self.consecutive):
            values = self.statistics(recent[:len(recent) - back])
            fired &= {name for name, value in values.items() if value > thresholds[name]}
            if not fired:
                break
        names = [name for name in STATISTICS if name in fired]
        return bool(names), names

    def scan(self, traffic: TrafficSequence | np.ndarray) -> dict[str, np.ndarray]:
        """Every statistic for every decision point of a sequence at once (offline evaluation).

        Entry t of each array belongs to the decision after matrix t (NaN before the statistic
        has its window). ``above_<name>``: above the threshold; ``fired_<name>``: above in each of
        the last ``consecutive`` windows; ``drifted``: any fired."""
        matrices = _as_matrices(traffic)
        shares = pair_shares(matrices)
        t_count = len(matrices)
        out: dict[str, np.ndarray] = {}
        ks = np.full(t_count, np.nan)
        js = np.full(t_count, np.nan)
        for end in range(self.window, t_count + 1):
            chunk = shares[end - self.window:end]
            ks[end - 1] = ks_score(chunk, self.reference)
        if t_count >= self.window:
            means = np.lib.stride_tricks.sliding_window_view(shares, self.window, axis=0).mean(axis=2)
            js[self.window - 1:] = _js_rows(means, self.mean_share)
        out["ks"], out["js"] = ks, js
        if self.envelope is not None:
            env = np.full(t_count, np.nan)
            w = self.envelope.window
            if t_count >= w:
                excess = self.envelope.excess(matrices)
                env[w - 1:] = np.median(np.lib.stride_tricks.sliding_window_view(excess, w), axis=1)
            out["envelope"] = env
        drifted = np.zeros(t_count, dtype=bool)
        for name, threshold in self.thresholds.items():
            above = np.nan_to_num(out[name], nan=-np.inf) > threshold
            out[f"above_{name}"] = above
            out[f"fired_{name}"] = _streak(above, self.consecutive)
            drifted |= out[f"fired_{name}"]
        out["drifted"] = drifted
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a manifest can carry it); the envelope is included when there is one."""
        return {"num_nodes": self.num_nodes, "mean_share": self.mean_share.tolist(),
                "reference": self.reference.tolist(), "ks_threshold": self.ks_threshold,
                "js_threshold": self.js_threshold, "window": self.window, "consecutive": self.consecutive,
                "quantile": self.quantile, "js": "jensenshannon distance, base 2, not squared",
                "envelope": None if self.envelope is None else self.envelope.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftDetector:
        missing = {"num_nodes", "mean_share", "reference", "ks_threshold", "js_threshold", "window"} - set(data)
        if missing:
            raise TrafficError(f"drift detector is missing {', '.join(sorted(missing))}")
        envelope = data.get("envelope")
        return cls(int(data["num_nodes"]), np.asarray(data["mean_share"], dtype=np.float64),
                   np.asarray(data["reference"], dtype=np.float64), float(data["ks_threshold"]),
                   float(data["js_threshold"]), int(data["window"]), int(data.get("consecutive", 2)),
                   float(data.get("quantile", 0.995)),
                   None if envelope is None else TrafficEnvelope.from_dict(envelope))


def _js_rows(rows: np.ndarray, mean_share: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (base 2) of every row of ``rows`` (R, P) to ``mean_share``."""
    if len(rows) == 0:
        return np.zeros(0)
    target = np.broadcast_to(mean_share, rows.shape)
    values = jensenshannon(rows, target, base=2, axis=1)
    return np.where(rows.sum(axis=1) > 0, np.nan_to_num(values, nan=0.0), 0.0)


def _streak(above: np.ndarray, consecutive: int) -> np.ndarray:
    """True where ``above`` held at this and the ``consecutive - 1`` entries before."""
    fired = above.copy()
    for back in range(1, consecutive):
        fired[back:] &= above[:-back]
        fired[:back] = False
    return fired


def calibration_scores(shares: np.ndarray, *, window: int, blocks: int, levels: int) -> dict[str, np.ndarray]:
    """KS and JS of every full window inside each of ``blocks`` contiguous blocks of ``shares``
    (T, P), against the reference fitted on the other blocks."""
    bounds = np.linspace(0, len(shares), blocks + 1).round().astype(int)
    ks, js = [], []
    for start, end in pairwise(bounds):
        others = np.concatenate([shares[:start], shares[end:]])
        reference, mean = share_quantiles(others, levels), others.mean(axis=0)
        block = shares[start:end]
        for stop in range(window, len(block) + 1):
            ks.append(ks_score(block[stop - window:stop], reference))
        means = np.lib.stride_tricks.sliding_window_view(block, window, axis=0).mean(axis=2)
        js.extend(_js_rows(means, mean))
    return {"ks": np.asarray(ks), "js": np.asarray(js)}
