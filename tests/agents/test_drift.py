"""Drift detection with standard statistics (agents.drift) next to the traffic envelope."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from agents.drift import DriftDetector, calibration_scores, ks_per_pair, pair_shares
from topologies import (
    TrafficEnvelope,
    TrafficError,
    TrafficSequence,
    load_topology,
    load_traffic,
)

ROOT = Path(__file__).resolve().parents[2]


def two_pair(shares_of_first: list[float], totals: list[float] | None = None) -> np.ndarray:
    """Two nodes, pairs 0→1 and 1→0: matrix t puts ``shares_of_first[t]`` of its total on 0→1."""
    totals = totals or [1.0] * len(shares_of_first)
    matrices = np.zeros((len(shares_of_first), 2, 2))
    matrices[:, 0, 1] = np.multiply(shares_of_first, totals)
    matrices[:, 1, 0] = np.multiply(1 - np.asarray(shares_of_first), totals)
    return matrices


def toy_detector(**options) -> DriftDetector:
    # training: 0→1 carried 0.2, 0.4, 0.6, 0.8 of the total (so 1→0 the rest): mean 0.5 / 0.5
    reference = np.array([[0.2, 0.4, 0.6, 0.8], [0.2, 0.4, 0.6, 0.8]])
    return DriftDetector(2, np.array([0.5, 0.5]), reference, options.pop("ks_threshold", 0.3),
                         options.pop("js_threshold", 0.3), **{"window": 2, "consecutive": 1, **options})


def test_pair_shares_leave_the_diagonal_out_and_ignore_volume():
    np.testing.assert_allclose(pair_shares(two_pair([0.25, 0.5], [4.0, 10.0])), [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(pair_shares(np.array([[7.0, 1.0], [3.0, 9.0]])), [[0.25, 0.75]])
    np.testing.assert_allclose(pair_shares(np.zeros((1, 2, 2))), [[0.0, 0.0]])


def test_js_distance_of_the_two_pair_toy_by_hand():
    detector = toy_detector()
    # window mean (1, 0) against (0.5, 0.5): M = (0.75, 0.25); KL(p||M) = log2(4/3) = 0.415037,
    # KL(q||M) = 0.5 log2(2/3) + 0.5 log2(2) = 0.207519; JSD = 0.311278 bits; distance = sqrt = 0.557923
    assert detector.statistics(two_pair([1.0, 1.0]))["js"] == pytest.approx(0.557923, abs=1e-6)
    # a window whose mean equals the training mean is at distance 0, whatever its spread
    assert detector.statistics(two_pair([0.2, 0.8]))["js"] == pytest.approx(0.0, abs=1e-7)
    # volumes do not count, only shares: (0.75, 0.25) twice, at totals 1 and 100
    same = detector.statistics(two_pair([0.75, 0.75], [1.0, 100.0]))["js"]
    assert same == pytest.approx(detector.statistics(two_pair([0.75, 0.75]))["js"])


def test_ks_statistic_of_the_two_pair_toy_by_hand():
    detector = toy_detector()
    # 0→1 shares (0.5, 0.9) against training (0.2, 0.4, 0.6, 0.8): just below 0.5 the window's CDF
    # is 0, training's 0.5 -> gap 0.5; just below 0.9, 0.5 against 1 -> 0.5. 1→0 (0.5, 0.1): at 0.1
    # 0.5 against 0; at 0.5, 1 against 0.5 -> 0.5. Mean over the pairs 0.5.
    window = pair_shares(two_pair([0.5, 0.9]))
    np.testing.assert_allclose(ks_per_pair(window, detector.reference), [0.5, 0.5])
    assert detector.statistics(two_pair([0.5, 0.9]))["ks"] == pytest.approx(0.5)
    # wholly outside the range training had: 1 for both pairs
    assert detector.statistics(two_pair([0.95, 0.9]))["ks"] == pytest.approx(1.0)
    # interleaved with training's points (0.3, 0.7): the CDFs never part by more than 0.25
    assert detector.statistics(two_pair([0.3, 0.7]))["ks"] == pytest.approx(0.25)


def test_ks_per_pair_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    reference = np.sort(rng.choice([0.0, 0.1, 0.2, 0.3, 0.5], size=(5, 40)), axis=1)
    reference[0] = np.sort(rng.random(40))
    window = rng.choice([0.0, 0.1, 0.2, 0.25, 0.5, 0.9], size=(7, 5))
    window[:, 0] = rng.random(7)
    expected = [ks_2samp(window[:, k], reference[k]).statistic for k in range(5)]
    np.testing.assert_allclose(ks_per_pair(window, reference), expected, atol=1e-12)


def test_drift_needs_consecutive_windows_and_says_which_statistics():
    # thresholds: KS 0.3, JS 0.3; window 2
    once = toy_detector(consecutive=2)
    normal, odd = [0.4, 0.6], [0.95, 0.95, 0.95]
    assert once.history == 3
    # only the last window (0.6, 0.95) is outside (KS 0.5; JS 0.245 is not): no drift with K = 2
    assert once.drifted(two_pair([0.4, 0.6, 0.95])) == (False, [])
    # (0.6, 0.95) then (0.95, 0.95): KS above in both, JS (0.453) only in the last
    assert once.drifted(two_pair([0.4, 0.6, 0.95, 0.95])) == (True, ["ks"])
    assert once.drifted(two_pair(normal + odd)) == (True, ["ks", "js"])
    score = once.score(two_pair(normal + odd))
    assert score["ks"]["above"] and score["ks"]["threshold"] == 0.3 and score["js"]["above"]
    with pytest.raises(TrafficError, match="needs the last 3 matrices"):
        once.drifted(two_pair([0.95, 0.95]))


def test_thresholds_are_the_quantile_of_held_out_windows():
    topology = load_topology("abilene")
    traffic = load_traffic("gravity", topology, count=140, seed=2)
    detector = DriftDetector.fit(traffic, window=4, blocks=7, quantile=0.9, levels=20)
    held_out = calibration_scores(pair_shares(traffic.matrices), window=4, blocks=7, levels=20)
    assert len(held_out["ks"]) == len(held_out["js"]) == 7 * (20 - 4 + 1)
    assert detector.ks_threshold == pytest.approx(np.quantile(held_out["ks"], 0.9))
    assert detector.js_threshold == pytest.approx(np.quantile(held_out["js"], 0.9))
    np.testing.assert_allclose(detector.mean_share, pair_shares(traffic.matrices).mean(axis=0))


@pytest.fixture(scope="module")
def stationary():
    """Stationary synthetic traffic: the first half to fit, the second half held out."""
    topology = load_topology("abilene")
    traffic = load_traffic("gravity", topology, count=1400, seed=3)
    return topology, traffic.matrices[:700], traffic.matrices[700:]


def test_calibrated_detector_rarely_fires_on_stationary_traffic(stationary):
    _, train, held_out = stationary
    detector = DriftDetector.fit(train, envelope=TrafficEnvelope.fit(TrafficSequence("train", train), window=3))
    scan = detector.scan(held_out)
    decisions = scan["drifted"][detector.history - 1:]
    assert decisions.mean() <= 0.02
    # drifted() on the last history agrees with the scan, decision by decision
    for t in (detector.history - 1, 200, 450, 699):
        assert detector.drifted(held_out[:t + 1])[0] == bool(scan["drifted"][t])


def test_an_injected_hotspot_is_detected_within_a_few_matrices(stationary):
    _, train, held_out = stationary
    detector = DriftDetector.fit(train)
    t0, destination = 300, 4
    injected = held_out.copy()
    injected[t0:, :, destination] *= 5.0
    scan = detector.scan(injected)
    assert not scan["drifted"][t0 - 1]
    first = t0 + int(np.flatnonzero(scan["drifted"][t0:])[0])
    assert first - t0 + 1 <= 4  # drifted matrices seen when the alarm holds
    assert scan["drifted"][first:].mean() > 0.95  # and it stays raised while the hotspot lasts


def test_round_trip_through_json(stationary):
    _, train, held_out = stationary
    envelope = TrafficEnvelope.fit(TrafficSequence("train", train), window=3)
    detector = DriftDetector.fit(train, window=5, consecutive=3, quantile=0.999, levels=50, envelope=envelope)
    again = DriftDetector.from_dict(json.loads(json.dumps(detector.to_dict())))
    assert (again.window, again.consecutive, again.quantile, again.thresholds) == \
        (5, 3, 0.999, detector.thresholds)
    np.testing.assert_array_equal(again.reference, detector.reference)
    np.testing.assert_array_equal(again.mean_share, detector.mean_share)
    np.testing.assert_array_equal(again.envelope.top_share, envelope.top_share)
    assert again.score(held_out[:10]) == detector.score(held_out[:10])
    bare = DriftDetector.from_dict(json.loads(json.dumps(DriftDetector.fit(train).to_dict())))
    assert bare.envelope is None and "envelope" not in bare.score(held_out[:10])
    with pytest.raises(TrafficError, match="missing ks_threshold"):
        DriftDetector.from_dict({k: v for k, v in detector.to_dict().items() if k != "ks_threshold"})


def test_bad_detectors_are_refused():
    with pytest.raises(TrafficError, match="must lie in"):
        toy_detector(ks_threshold=1.5)
    with pytest.raises(TrafficError, match="needs 2 mean shares"):
        DriftDetector(2, np.array([1.0]), np.zeros((2, 3)), 0.1, 0.1)
    with pytest.raises(TrafficError, match="sorted"):
        DriftDetector(2, np.array([0.5, 0.5]), np.array([[0.5, 0.2], [0.1, 0.2]]), 0.1, 0.1)
    with pytest.raises(TrafficError, match="need 14"):
        DriftDetector.fit(two_pair([0.5] * 10), window=2, blocks=7)


def test_imports_without_torch():
    script = ("import sys; sys.modules['torch'] = None; sys.modules['stable_baselines3'] = None\n"
              "import numpy as np\n"
              "from agents.drift import DriftDetector\n"
              "rng = np.random.default_rng(0)\n"
              "detector = DriftDetector.fit(rng.random((70, 3, 3)), window=3)\n"
              "assert detector.drifted(rng.random((4, 3, 3)))[0] in (True, False)\n"
              "assert sys.modules['torch'] is None\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
