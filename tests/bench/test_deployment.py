"""bench/deployment.py's parts that need no network: the replayed series, OSPF on the controller's
paths, the counter arithmetic and the defensive reading of audit records."""

from __future__ import annotations

import numpy as np
import pytest

from bench import deployment
from topologies import k_shortest_paths, load_topology


def test_the_phases_replay_the_same_segment_after_the_same_warmup():
    args = deployment.options([])
    slots, starts = deployment.layout(args)
    assert list(starts) == list(deployment.PHASES)
    played = {phase: [s.dataset_index for s in slots if s.phase == phase] for phase in ("shadow", "active", "lp_last")}
    assert played["shadow"] == played["active"] == played["lp_last"]
    measured = [s for s in slots if s.phase == "shadow" and s.role == "measured"]
    assert len(measured) == args.segment and len(played["shadow"]) == args.segment + args.warmup
    assert all(s.dataset_index // deployment.MATRICES_PER_DAY == args.day for s in slots)
    drifted = [s for s in slots if s.drifted]
    assert len(drifted) == args.drift_segment - args.drift_after and {s.phase for s in drifted} == {"drift"}
    assert sum(1 for s in slots if s.phase == "rollback" and s.role == "warmup") == args.rollback_warmup
    assert [s.position for s in slots] == list(range(len(slots)))


def test_a_segment_that_does_not_fit_the_day_is_refused():
    with pytest.raises(deployment.BenchError, match="does not fit"):
        deployment.layout(deployment.options(["--segment", "80"]))


def test_ospf_on_the_controllers_paths():
    topology = load_topology("abilene")
    pathset = k_shortest_paths(topology, 4)
    ratios, projected = deployment.ospf_on_pathset(pathset)
    np.testing.assert_allclose(ratios.sum(axis=1), 1.0)
    assert not (ratios[~np.asarray(pathset.mask)] > 0).any()
    assert len(projected) == 3  # Abilene: three pairs' OSPF path is longer than the 4 hop-shortest


def test_window_rates_take_the_first_and_last_sample_inside_the_window():
    offset = 1000.0  # epoch = monotonic + offset
    reads = [[(1.0, 0.0), (1.0, 0.0)], [(2.0, 100.0), (1.5, 50.0)], [(3.0, 300.0), (1.5, 50.0)],
             [(4.0, 600.0), (4.5, 80.0)]]
    times, counts = deployment.counter_arrays(reads, 2)
    rates, polls = deployment.window_rates(times, counts, (offset + 1.5, offset + 3.5), offset)
    assert rates[0] == pytest.approx(8.0 * 200.0 / 1.0)
    assert np.isnan(rates[1])  # one sample inside: no rate
    assert polls == 2


def test_audit_fields_are_read_defensively():
    old = {"kind": "decision", "drift": {"score": 0.1, "threshold": 0.08, "drifted": True}}
    new = {"kind": "decision", "drift": {"statistics": {}, "drifted": False, "fired": []}}
    assert deployment.drifted(old) is True and deployment.drifted(new) is False
    assert deployment.drifted({"kind": "decision"}) is None
    assert deployment.field(new, "measured_mlu") is None
    with pytest.raises(deployment.BenchError, match="latency_ms.inference"):
        deployment.field(new, "latency_ms", "inference", required=True)
    assert deployment.install_of({"install": {"source": "policy:x", "confirmed": True}})["source"] == "policy:x"
    assert deployment.install_of({"install": {"source": "policy:x", "confirmed": False}}) is None
