"""Drift detection on Abilene (agents.drift.DriftDetector next to the traffic envelope).

Fitted on ``abilene-train`` (the envelope as ``rlte train`` fits it: window 3, 7 blocks);
scored on ``abilene-test``, the held-out week. Its first six days are normal; on day 7
(from matrix 1728) Houston's incoming share jumps from ~4% (training at most 8%) to ~30%: a
real hotspot, scored as a drift event of its own, not as false alarms.

- false-alarm rate on days 1-6: the share of decision points (every matrix from the
  detector's first full history on) where each statistic is above its threshold, fires (above for ``consecutive``
  windows in a row), and where the combination fires; and the envelope alone as the runtime
  uses it today (score above its threshold, one window);
- detection delay on drift injected into days 1-5 from matrix t0 on, at ``--starts`` start
  points (each run's day after t0 ends before day 6's afternoon, where KS already rises): a hotspot (one destination's incoming traffic ×5; the destination rotates over the 12
  nodes) and a region doubling (every pair with its origin in 3 neighbouring nodes ×2; the region
  rotates over four). Delay = the number of drifted matrices seen when the alarm first holds
  (1: on the first drifted matrix; ×5 min), over one day after t0; no alarm in that day is a miss.

Writes ``bench/results/drift.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.drift import DriftDetector
from bench.common import machine, write
from topologies import TrafficEnvelope, load_topology, load_traffic

MINUTES_PER_MATRIX = 5
HORIZON = 288  # one day of matrices after t0
NORMAL_END = 6 * 288  # abilene-test's day 7 is not normal: Houston's incoming share jumps from ~4% to ~30%
NATURAL_T0 = NORMAL_END  # so that jump is scored as a real drift event starting there
LAST_START = NORMAL_END - HORIZON - 240  # injected runs end before day 6's afternoon, where KS already rises
MAIN_WINDOW = 6
# three neighbouring Abilene nodes each (indices into the topology's node list)
REGIONS = {"west (LOSA, SNVA, STTL)": [7, 9, 10], "southeast (ATLA-M5, ATLA, HSTN)": [0, 1, 4],
           "midwest (CHIN, IPLS, KSCY)": [2, 5, 6], "east (NYCM, WASH, DNVR)": [8, 11, 3]}


def hotspot(matrices: np.ndarray, t0: int, destination: int, factor: float = 5.0) -> np.ndarray:
    out = matrices.copy()
    out[t0:, :, destination] *= factor
    return out


def region(matrices: np.ndarray, t0: int, origins: list[int], factor: float = 2.0) -> np.ndarray:
    out = matrices.copy()
    out[t0:, origins, :] *= factor
    return out


def alarms(detector: DriftDetector, matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Per decision point: each statistic fired (K windows), the combination (and the combination
    of JS and the envelope alone), and the envelope alone as the runtime checks it today (one
    window above its threshold)."""
    scan = detector.scan(matrices)
    out = {name: scan[f"fired_{name}"] for name in detector.thresholds}
    out["combined"] = scan["drifted"]
    out["combined_without_ks"] = scan["fired_js"] | scan["fired_envelope"]
    out["envelope_alone"] = scan["above_envelope"]
    return out


def delay_summary(delays: list[int | None]) -> dict:
    hits = [d for d in delays if d is not None]
    return {"delays_matrices": delays, "misses": len(delays) - len(hits),
            "median_matrices": float(np.median(hits)) if hits else None,
            "max_matrices": int(max(hits)) if hits else None,
            "median_minutes": float(np.median(hits)) * MINUTES_PER_MATRIX if hits else None,
            "max_minutes": int(max(hits)) * MINUTES_PER_MATRIX if hits else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out")
    parser.add_argument("--windows", type=lambda text: [int(w) for w in text.split(",")], default=[3, 6, 12],
                        help="detector windows to evaluate (the docs quote 6)")
    parser.add_argument("--consecutive", type=int, default=2)
    parser.add_argument("--quantile", type=float, default=0.995)
    parser.add_argument("--starts", type=int, default=12, help="injection start points in days 1-5")
    args = parser.parse_args()

    started = time.perf_counter()
    topology = load_topology("abilene")
    train, test = load_traffic("abilene-train", topology), load_traffic("abilene-test", topology)
    envelope = TrafficEnvelope.fit(train, window=3, blocks=7)
    houston = [n.name for n in topology.nodes].index("HSTNng")
    incoming = test.matrices[:, :, houston].sum(axis=1) / test.matrices.sum(axis=(1, 2))
    train_incoming = train.matrices[:, :, houston].sum(axis=1) / train.matrices.sum(axis=(1, 2))
    results = {str(window): evaluate(topology, train, test, envelope, window, args)
               for window in args.windows}
    payload = {
        "benchmark": "drift", "machine": machine(),
        "setup": {"fit": "abilene-train (2016 matrices)", "normal": f"abilene-test matrices 0-{NORMAL_END - 1} "
                  "(days 1-6; day 7 holds a real hotspot, see natural_hotspot)",
                  "consecutive": args.consecutive, "quantile": args.quantile, "main_window": MAIN_WINDOW,
                  "calibration": "7 blocks (days) of abilene-train held out in turn",
                  "js": "scipy jensenshannon distance, base 2, not squared, window mean shares vs training mean",
                  "ks": "mean over pairs of the per-pair two-sample KS statistic (window vs 100 training quantiles)",
                  "envelope": "TrafficEnvelope.fit(abilene-train, window=3, blocks=7); envelope_alone = the runtime's "
                              "check today (score above threshold, one window)",
                  "horizon_matrices": HORIZON,
                  "delay": "drifted matrices seen when the alarm first holds (1 = on the first); x5 minutes"},
        "houston_incoming_share": {"train_max": float(train_incoming.max()),
                                   "test_days": [float(incoming[d * 288:(d + 1) * 288].mean()) for d in range(7)]},
        "windows": results,
        "seconds": time.perf_counter() - started,
    }
    write("drift", payload, args.out)
    for window, result in results.items():
        print(f"window {window}: thresholds {result['thresholds']}")
        print(f"  false alarms, days 1-6: {result['false_alarm_rate']['days_1_6']}")
        print(f"  natural Houston hotspot (t0={NATURAL_T0}): {result['natural_hotspot']}")
        for case in ("hotspot_x5", "region_x2"):
            for name, summary in result["detection"][case]["summary"].items():
                print(f"  {case:11s} {name:15s} median {summary['median_matrices']} max {summary['max_matrices']} "
                      f"misses {summary['misses']}")


def evaluate(topology, train, test, envelope, window: int, args) -> dict:
    fit_started = time.perf_counter()
    detector = DriftDetector.fit(train, window=window, consecutive=args.consecutive, quantile=args.quantile,
                                 envelope=envelope)
    fit_seconds = time.perf_counter() - fit_started
    first = detector.history - 1  # the first decision point with a full history
    normal = alarms(detector, test.matrices)
    scan = detector.scan(test.matrices)
    rates = {"days_1_6": {name: float(fired[first:NORMAL_END].mean()) for name, fired in normal.items()},
             "whole_week": {name: float(fired[first:].mean()) for name, fired in normal.items()},
             "per_day": {name: [float(fired[max(d * 288, first):(d + 1) * 288].mean()) for d in range(7)]
                         for name, fired in normal.items()},
             "above_one_window_days_1_6": {name: float(scan[f"above_{name}"][first:NORMAL_END].mean())
                                           for name in detector.thresholds}}
    natural = {}
    for name, series in normal.items():
        hit = np.flatnonzero(series[NATURAL_T0:])
        natural[name] = int(hit[0]) + 1 if len(hit) else None

    starts = np.linspace(first + 1, LAST_START, args.starts).round().astype(int).tolist()
    names = list(REGIONS)
    cases = {
        "hotspot_x5": [(t0, f"destination {topology.nodes[i % topology.num_nodes].name}",
                        hotspot(test.matrices, t0, i % topology.num_nodes)) for i, t0 in enumerate(starts)],
        "region_x2": [(t0, f"origins {names[i % len(names)]}", region(test.matrices, t0, REGIONS[names[i % len(names)]]))
                      for i, t0 in enumerate(starts)],
    }
    detection = {}
    for case, injected in cases.items():
        delays: dict[str, list[int | None]] = {name: [] for name in normal}
        runs = []
        for t0, what, matrices in injected:
            fired = alarms(detector, matrices[:t0 + HORIZON])
            run = {"t0": t0, "drift": what, "alarm_before_t0": bool(fired["combined"][t0 - 1])}
            for name, series in fired.items():
                hit = np.flatnonzero(series[t0:])
                delays[name].append(int(hit[0]) + 1 if len(hit) else None)
                run[name] = delays[name][-1]
            runs.append(run)
        detection[case] = {"starts": starts, "runs": runs,
                           "summary": {name: delay_summary(d) for name, d in delays.items()}}
    return {"window": window, "thresholds": detector.thresholds, "decision_points_days_1_6": NORMAL_END - first,
            "false_alarm_rate": rates, "natural_hotspot": natural, "detection": detection,
            "fit_seconds": fit_seconds}


if __name__ == "__main__":
    main()
