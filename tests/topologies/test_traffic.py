"""Traffic generators, real datasets and the flat-matrix loader."""

from __future__ import annotations

import numpy as np
import pytest

from topologies import TrafficError, TrafficSequence, fat_tree, load_topology, load_traffic
from topologies.traffic import MODELS, read_flat_matrices


@pytest.mark.parametrize("model", sorted(MODELS))
def test_synthetic_models_are_seeded_reproducible_and_sized(model):
    topo = load_topology("abilene")
    a = load_traffic(model, topo, count=6, seed=3)
    b = load_traffic(model, topo, count=6, seed=3)
    c = load_traffic(model, topo, count=6, seed=4)
    assert a.matrices.shape == (6, 12, 12)
    np.testing.assert_array_equal(a.matrices, b.matrices)
    assert not np.allclose(a.matrices, c.matrices)
    assert (a.matrices >= 0).all() and (np.diagonal(a.matrices, axis1=1, axis2=2) == 0).all()
    # mean total demand is the documented default: 5% of summed capacity
    assert a.matrices.sum(axis=(1, 2)).mean() == pytest.approx(0.05 * topo.capacities.sum())


def test_transit_switches_neither_send_nor_receive():
    topo = fat_tree(4)
    tms = load_traffic("gravity", topo, count=2).matrices
    transit = [i for i, n in enumerate(topo.nodes) if n.role != "edge"]
    assert tms[:, transit, :].sum() == 0 and tms[:, :, transit].sum() == 0
    assert (tms[:, [i for i in range(20) if i not in transit]][:, :, [0]] == 0).all()  # core 0 gets nothing


def test_gravity_is_rank_one_up_to_noise():
    topo = load_topology("abilene")
    tm = load_traffic("gravity", topo, count=1, seed=1, noise=0.0).matrices[0]
    off = ~np.eye(12, dtype=bool)
    out_mass, in_mass = tm.sum(1), tm.sum(0)
    # with zero noise, t_ij ∝ out_i in_j off the diagonal: all 2x2 minors vanish
    assert tm[0, 1] * tm[2, 3] == pytest.approx(tm[0, 3] * tm[2, 1], rel=1e-9)
    assert (tm[off] > 0).all() and out_mass.std() > 0 and in_mass.std() > 0


def test_hotspot_concentrates_traffic_on_hotspots():
    topo = load_topology("abilene")
    tms = load_traffic("hotspot", topo, count=20, seed=2, hotspots=2, hotspot_share=0.6).matrices
    incoming = tms.sum(axis=(0, 1))
    assert np.sort(incoming)[-2:].sum() / incoming.sum() > 0.6


def test_diurnal_cycle_and_bimodal_mix():
    topo = load_topology("abilene")
    series = load_traffic("diurnal", topo, count=288, seed=0, noise=0.0, spike_prob=0.0)
    totals = series.matrices.sum(axis=(1, 2))
    assert series.interval_s == 300.0
    assert np.argmax(totals) == 72 and np.argmin(totals) == 216  # sin peak at a quarter period, trough at 3/4
    assert totals.max() / totals.min() == pytest.approx(1.5 / 0.5, rel=1e-6)
    bimodal = load_traffic("bimodal", topo, count=50, seed=0, p_large=0.2).matrices
    values = bimodal[:, ~np.eye(12, dtype=bool)].ravel()
    large = values > values.mean() * 3
    assert 0.15 < large.mean() < 0.25


def test_generator_parameter_errors():
    topo = load_topology("abilene")
    for call, message in [
        (lambda: load_traffic("gravity", topo, count=0), "count must be a positive integer"),
        (lambda: load_traffic("gravity", topo, total_bps=-1.0), "total_bps must be positive"),
        (lambda: load_traffic("bimodal", topo, p_large=1.5), "p_large"),
        (lambda: load_traffic("hotspot", topo, hotspots=12), "hotspots must be between"),
        (lambda: load_traffic("diurnal", topo, amplitude=1.0), "amplitude"),
        (lambda: load_traffic("gravity"), "needs a topology"),
        (lambda: load_traffic("poisson", topo), "unknown traffic 'poisson'"),
    ]:
        with pytest.raises(TrafficError, match=message):
            call()


def test_real_datasets():
    train, test = load_traffic("abilene-train"), load_traffic("abilene-test")
    assert train.matrices.shape == test.matrices.shape == (2016, 12, 12)
    assert train.interval_s == 300.0
    assert train.matrices[0, 0, 1] == pytest.approx(1.95828e5 * 1e3)  # first line, second value, kbit/s -> bit/s
    assert train.matrices[0, 0, 0] == 0  # the diagonal is dropped
    b4 = load_traffic("b4")
    assert b4.matrices.shape == (36, 12, 12)
    assert b4.matrices[0, 0, 1] == pytest.approx(9.77151e6)
    with pytest.raises(Exception, match="12x12 but topology 'geant' has 40 nodes"):
        load_traffic("abilene-test", load_topology("geant"))


def test_flat_matrix_loader(tmp_path):
    good = tmp_path / "tms.txt"
    good.write_text("# two 2x2 matrices\n0 1 2 0\n0,3,4,0\n")
    seq = read_flat_matrices(good, 2, unit_bps=10.0)
    np.testing.assert_array_equal(seq.matrices, [[[0, 10], [20, 0]], [[0, 30], [40, 0]]])
    for text, message in [("0 1 2\n", "3 values, expected 2x2=4"), ("0 1 x 0\n", "'x' is not a number"),
                          ("0 -1 2 0\n", "non-negative"), ("0 nan 2 0\n", "finite"), ("\n# nothing\n", "no traffic")]:
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(TrafficError, match=message):
            read_flat_matrices(bad, 2)
    with pytest.raises(TrafficError, match="no such file"):
        read_flat_matrices(tmp_path / "missing.txt", 2)


def test_sequence_validation_and_scaling():
    with pytest.raises(TrafficError, match="expected shape"):
        TrafficSequence("x", np.zeros((2, 3, 4)))
    with pytest.raises(TrafficError, match="negative"):
        TrafficSequence("x", -np.ones((1, 2, 2)))
    seq = TrafficSequence("x", np.ones((3, 2, 2)))
    assert seq.scaled(2.0).matrices[0, 0, 1] == 2.0
    np.testing.assert_array_equal(seq.scaled(np.array([1.0, 2.0, 3.0])).matrices[:, 0, 1], [1, 2, 3])
    with pytest.raises(TrafficError, match="3 matrices"):
        seq.scaled(np.array([1.0, 2.0]))
    assert len(seq[1:]) == 2 and seq[0].shape == (2, 2)
