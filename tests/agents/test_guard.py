"""The traffic envelope (topologies.TrafficEnvelope) and the drift guard (agents.guard)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import DriftGuard, LPPolicy, StaticPolicy, evaluate_policies, lp_guard
from topologies import Routing, TrafficEnvelope, TrafficError, TrafficSequence, k_shortest_paths, load_topology

from tests.networks import triangle


def two_pair_sequence(shares_of_first: list[float], totals: list[float] | None = None) -> TrafficSequence:
    """Two nodes, pairs 0→1 and 1→0: matrix t puts ``shares_of_first[t]`` of its total on 0→1."""
    totals = totals or [1.0] * len(shares_of_first)
    matrices = np.zeros((len(shares_of_first), 2, 2))
    matrices[:, 0, 1] = np.multiply(shares_of_first, totals)
    matrices[:, 1, 0] = np.multiply(1 - np.asarray(shares_of_first), totals)
    return TrafficSequence("two pairs", matrices)


def test_excess_is_the_share_above_each_pairs_largest_share():
    # shares of 0→1: 0.5, 0.7, 0.6 (so 1→0: 0.5, 0.3, 0.4); totals differ: shares, not volumes, count
    envelope = TrafficEnvelope.fit(two_pair_sequence([0.5, 0.7, 0.6], [1.0, 5.0, 2.0]), window=1, blocks=3)
    np.testing.assert_allclose(envelope.top_share, [[0.0, 0.7], [0.5, 0.0]])
    # 0.9 / 0.1: 0→1 is 0.2 above its 0.7; 0.2 / 0.8: 1→0 is 0.3 above its 0.5
    np.testing.assert_allclose(envelope.excess(two_pair_sequence([0.9, 0.2, 0.6]).matrices), [0.2, 0.3, 0.0])
    assert envelope.excess(np.zeros((2, 2)))[0] == 0.0  # no traffic, nothing outside
    assert envelope.excess(np.array([[5.0, 0.9], [0.1, 5.0]]))[0] == pytest.approx(0.2)  # the diagonal never counts


def test_threshold_is_the_largest_score_of_a_block_left_out():
    # leave out 0.5: top (0.7, 0.4) -> 1→0's 0.5 is 0.1 above; leave out 0.7: top (0.6, 0.5) -> 0.1;
    # leave out 0.6: top (0.7, 0.5) -> 0
    envelope = TrafficEnvelope.fit(two_pair_sequence([0.5, 0.7, 0.6]), window=1, blocks=3)
    assert envelope.threshold == pytest.approx(0.1)
    # two blocks of two, window 2 (median of a window of two is their mean): leave out [0.5, 0.5]: top
    # (0.8, 0.3), excess (0.2, 0.2) -> 0.2; leave out [0.8, 0.7]: top (0.5, 0.5), excess (0.3, 0.2) -> 0.25
    envelope = TrafficEnvelope.fit(two_pair_sequence([0.5, 0.5, 0.8, 0.7]), window=2, blocks=2)
    assert envelope.threshold == pytest.approx(0.25)


def test_drift_needs_most_of_the_window_outside():
    envelope = TrafficEnvelope(np.array([[0.0, 0.6], [0.6, 0.0]]), threshold=0.1, window=3)
    one_odd = two_pair_sequence([0.5, 0.95, 0.5]).matrices       # excess 0, 0.35, 0: median 0
    two_odd = two_pair_sequence([0.95, 0.5, 0.9]).matrices       # 0.35, 0, 0.3: median 0.3
    assert envelope.score(one_odd) == 0.0 and not envelope.drifted(one_odd)
    assert envelope.score(two_odd) == pytest.approx(0.3) and envelope.drifted(two_odd)
    # only the last window counts
    assert not envelope.drifted(np.concatenate([two_odd, one_odd]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=12), st.floats(0.01, 100.0))
def test_reference_traffic_lies_inside_its_own_envelope(shares, scale):
    sequence = two_pair_sequence(shares)
    envelope = TrafficEnvelope.fit(sequence, window=1, blocks=2)
    np.testing.assert_allclose(envelope.excess(sequence.matrices * scale), 0.0, atol=1e-12)
    assert 0.0 <= envelope.threshold <= 1.0
    other = np.random.default_rng(len(shares)).random((5, 2, 2)) * scale
    excess = envelope.excess(other)
    assert ((excess >= 0) & (excess <= 1 + 1e-12)).all()
    np.testing.assert_allclose(envelope.excess(other * 7.0), excess)  # scale-free


def test_envelope_round_trips_and_refuses_bad_input():
    envelope = TrafficEnvelope.fit(two_pair_sequence([0.5, 0.7, 0.6, 0.4]), window=1, blocks=2)
    again = TrafficEnvelope.from_dict(envelope.to_dict())
    np.testing.assert_array_equal(again.top_share, envelope.top_share)
    assert (again.threshold, again.window) == (envelope.threshold, envelope.window)
    with pytest.raises(TrafficError, match="envelope is missing threshold"):
        TrafficEnvelope.from_dict({"top_share": [[0, 1], [1, 0]], "window": 1})
    with pytest.raises(TrafficError, match="has 4 matrices; 3 blocks of at least window=2 matrices need 6"):
        TrafficEnvelope.fit(two_pair_sequence([0.5, 0.7, 0.6, 0.4]), window=2, blocks=3)
    with pytest.raises(TrafficError, match="at least 2 blocks, got 1"):
        TrafficEnvelope.fit(two_pair_sequence([0.5, 0.7]), window=1, blocks=1)
    with pytest.raises(TrafficError, match="window must be a whole number >= 1, got 0"):
        TrafficEnvelope(np.zeros((2, 2)), threshold=0.1, window=0)
    with pytest.raises(TrafficError, match="threshold must be a share in"):
        TrafficEnvelope(np.zeros((2, 2)), threshold=1.5)
    with pytest.raises(TrafficError, match="top shares must lie in"):
        TrafficEnvelope(np.full((2, 2), -0.1), threshold=0.1)
    with pytest.raises(TrafficError, match=r"do not fit an envelope over 2 nodes"):
        envelope.excess(np.ones((3, 3)))
    with pytest.raises(TrafficError, match="needs the last 1 matrices"):
        envelope.score(np.ones((0, 2, 2)))


# ----------------------------------------------------------------------------- the guard
class CountingPolicy:
    """A fixed routing that counts its calls and resets (as the SB3 adapters are stateful)."""

    clairvoyant = False

    def __init__(self, name: str, routing: Routing, history: int = 1) -> None:
        self.name, self.routing, self.history, self.pathset = name, routing, history, routing.pathset
        self.calls = self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def route(self, history: np.ndarray) -> np.ndarray:
        assert len(history) == self.history
        self.calls += 1
        return self.routing.ratios


def triangle_envelope(threshold: float = 0.1) -> TrafficEnvelope:
    """Triangle a, b, c: traffic only a→c is inside; anything else is outside."""
    top = np.zeros((3, 3))
    top[0, 2] = 1.0
    return TrafficEnvelope(top, threshold=threshold, window=2)


def test_guard_routes_with_the_fallback_only_while_the_traffic_has_drifted():
    pathset = k_shortest_paths(triangle(), 2)
    learned = CountingPolicy("learned", Routing.first_path(pathset))
    fallback = CountingPolicy("classic", Routing.uniform(pathset))
    guard = DriftGuard(learned, fallback, triangle_envelope())
    assert (guard.name, guard.history, guard.clairvoyant) == ("learned_guarded", 2, False)
    inside, outside = np.zeros((3, 3)), np.zeros((3, 3))
    inside[0, 2] = 4.0
    outside[1, 0] = 4.0
    np.testing.assert_array_equal(guard.route(np.stack([inside, inside])), learned.routing.ratios)
    np.testing.assert_array_equal(guard.route(np.stack([outside, outside])), fallback.routing.ratios)
    np.testing.assert_array_equal(guard.route(np.stack([inside, inside])), learned.routing.ratios)  # back inside
    assert guard.fell_back == [False, True, False]
    # the learned policy decides every matrix (shadow), the fallback only when it is used
    assert (learned.calls, fallback.calls) == (3, 1)
    guard.reset()
    assert guard.fell_back == [] and (learned.resets, fallback.resets) == (1, 1)
    with pytest.raises(ValueError, match="learned_guarded routes from the last 2 matrices, got 1"):
        guard.route(np.stack([inside]))


def test_guarded_scores_are_the_policy_s_inside_and_the_fallback_s_outside():
    topology = load_topology("abilene")
    pathset = k_shortest_paths(topology, 3)
    rng = np.random.default_rng(0)
    n = topology.num_nodes
    base = rng.random((n, n)) * 1e8
    matrices = np.stack([base * rng.uniform(0.9, 1.1, (n, n)) for _ in range(30)])
    shifted = matrices.copy()
    shifted[15:, 0, 1] *= 40.0  # from matrix 15 on, one pair carries far more of the total
    learned = StaticPolicy("shortest", Routing.first_path(pathset))
    guard = lp_guard(learned, TrafficEnvelope.fit(TrafficSequence("first 14", matrices[:14]), window=2, blocks=7))
    indices = np.arange(3, 30)
    _, scores = evaluate_policies([learned, guard, LPPolicy("lp_previous", pathset, tie_break="min_load")],
                                  shifted, indices)
    fell_back = np.array(guard.fell_back)
    assert not fell_back[indices < 16].any() and fell_back[indices >= 17].all()  # 2-matrix window: 16 is half in
    expected = np.where(fell_back, scores["lp_previous"].normalized_mlu, scores["shortest"].normalized_mlu)
    np.testing.assert_allclose(scores["shortest_guarded"].normalized_mlu, expected)


def test_guard_refuses_what_it_cannot_guard():
    pathset = k_shortest_paths(triangle(), 2)
    learned = StaticPolicy("learned", Routing.first_path(pathset))
    with pytest.raises(ValueError, match="neither policy may see the matrix it routes"):
        DriftGuard(learned, LPPolicy("oracle", pathset, clairvoyant=True), triangle_envelope())
    with pytest.raises(ValueError, match="route different path sets"):
        DriftGuard(learned, LPPolicy("lp", k_shortest_paths(triangle(), 1)), triangle_envelope())
    with pytest.raises(ValueError, match="the envelope covers 2 nodes, topology 'triangle' has 3"):
        DriftGuard(learned, LPPolicy("lp", pathset), TrafficEnvelope(np.zeros((2, 2)), threshold=0.1))
    # the same paths built twice are the same path set
    DriftGuard(learned, LPPolicy("lp", k_shortest_paths(triangle(), 2)), triangle_envelope())
