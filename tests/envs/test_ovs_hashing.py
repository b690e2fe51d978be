"""The model of Open vSwitch's select-group hashing (envs.ovs_hashing). Whether it predicts
what OVS does is tested on the live network (tests/envs/test_mininet.py) and benchmarked against
every committed live measurement (bench/ovs_hashing.py); these check its parts."""

from __future__ import annotations

import numpy as np
import pytest

from controllers.fabric import MAX_SOURCE_ADDRESSES, FabricPlan, host_ip, source_ip
from envs.ovs_hashing import (_hash_add, _hash_finish, address_word, dp_hash_table, even_sources, hashed_ratios,
                              pair_hashes, symmetric_l3l4_hash)
from topologies import k_shortest_paths, load_topology


@pytest.mark.parametrize(("key", "seed", "expected"), [
    (b"", 0, 0x00000000), (b"", 1, 0x514E28B7), (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE), (b"\x21\x43\x65\x87", 0, 0xF55B516B),
    (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE), (b"\xff\xff\xff\xff", 0, 0x76293B50),
])
def test_hash_steps_are_murmur3s_by_its_published_vectors(key, seed, expected):
    # MurmurHash3_x86_32 of a one-block key: one block step, the length, the finish
    h = np.array([seed], dtype=np.uint64)
    if key:
        h = _hash_add(h, np.array([int.from_bytes(key, "little")], dtype=np.uint64))
    assert int(_hash_finish(h ^ np.uint64(len(key)))[0]) == expected


def test_flow_hash_is_symmetric_and_sees_only_the_addresses_xor():
    forward = symmetric_l3l4_hash(["10.100.0.1", "10.101.0.1"], ["10.0.0.4", "10.0.0.4"])
    backward = symmetric_l3l4_hash(["10.0.0.4", "10.0.0.4"], ["10.100.0.1", "10.101.0.1"])
    np.testing.assert_array_equal(forward, backward)
    assert forward[0] != forward[1]
    # 10.100.0.1 ⊕ 10.0.0.4 = 0.100.0.5 = 10.100.0.5 ⊕ 10.0.0.0
    assert symmetric_l3l4_hash(["10.100.0.5"], ["10.0.0.0"])[0] == forward[0]
    assert symmetric_l3l4_hash(["10.100.0.1"], ["10.0.0.4"], protocol=6)[0] != forward[0]
    assert address_word("10.0.0.1") == 0x0100000A  # network-order bytes loaded little-endian
    with pytest.raises(ValueError, match="not an IPv4 address: '10.0.300.1'"):
        address_word("10.0.300.1")


def test_dp_hash_table_deals_slots_by_webster_as_worked_by_hand():
    # weights 3 and 1: 16 slots; each goes to the larger of 3/(2a+1) and 1/(2b+1), the first on ties
    np.testing.assert_array_equal(dp_hash_table([3, 1]), [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0])
    assert len(dp_hash_table([128, 128])) == 16
    table = dp_hash_table([255, 1])  # total ÷ smallest = 256 slots, the most OVS tables
    assert len(table) == 256 and np.bincount(table).tolist() == [255, 1]
    assert len(dp_hash_table([77, 100, 79])) == 16
    assert len(dp_hash_table([200, 50, 6])) == 64  # 256 / 6 -> 43 -> 64
    assert dp_hash_table([256, 1]) is None  # 257 slots needed: OVS picks buckets another way
    for bad in ([], [3, 0], [-1, 2]):
        with pytest.raises(ValueError, match="positive bucket weights"):
            dp_hash_table(bad)


def test_hashed_ratios_give_each_pair_whole_flows_on_its_weighted_paths():
    pathset = k_shortest_paths(load_topology("abilene"), 4)
    plan = FabricPlan(pathset)
    rng = np.random.default_rng(0)
    ratios = rng.dirichlet(np.ones(4), size=pathset.num_pairs) * pathset.mask
    ratios[::3, 1:] = 0.0  # every third pair on one path
    ratios /= ratios.sum(axis=1, keepdims=True)
    shares, untabled = hashed_ratios(plan, ratios, 32)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(shares * 32, np.rint(shares * 32), atol=1e-9)  # whole flows
    np.testing.assert_array_equal(shares[::3], ratios[::3])
    tiny = np.rint(ratios * 256) == 0
    assert (shares[tiny] == 0).all()  # a path whose weight rounds to 0 has no bucket
    assert not untabled.any()
    # four times the flows (the most the replay has addresses for is 150): about half the error
    many, _ = hashed_ratios(plan, ratios, 128)
    assert np.abs(many - ratios).mean() < 0.03 < np.abs(shares - ratios).mean()
    assert np.abs(shares - ratios).mean() > 1.5 * np.abs(many - ratios).mean()


def test_the_controller_weights_always_fit_the_hash_table_and_bad_input_is_refused():
    pathset = k_shortest_paths(load_topology("abilene"), 4)
    plan = FabricPlan(pathset)
    ratios = np.zeros((pathset.num_pairs, 4))
    ratios[:, 0] = 1.0
    pair = int(np.argmax(pathset.mask.all(axis=1)))  # one with 4 candidate paths
    ratios[pair] = np.array([250.6, 2.6, 1.6, 1.2]) / 256
    assert dp_hash_table([251, 3, 2, 1]) is None  # each share rounded on its own: 257 in all, 512 slots needed
    assert [b.weight for b in plan.buckets(pair, ratios[pair])] == [251, 3, 1, 1]  # apportioned: 256
    shares, untabled = hashed_ratios(plan, ratios, 8)
    assert not untabled.any()
    assert np.allclose(shares[pair] * 8, np.round(shares[pair] * 8)) and shares[pair].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"ratios of shape \(3, 4\) do not fit the plan.s path set \(132 pairs × 4 paths\)"):
        hashed_ratios(plan, ratios[:3], 8)
    with pytest.raises(ValueError, match="flows_per_pair must be at least 1, got 0"):
        hashed_ratios(plan, ratios, 0)


def test_even_sources_cover_the_slots_evenly_and_depend_on_the_addresses_only():
    pathset = k_shortest_paths(load_topology("abilene"), 4)
    chosen = even_sources(pathset, 32)
    assert chosen.shape == (pathset.num_pairs, 32) and chosen.min() >= 0 and chosen.max() < MAX_SOURCE_ADDRESSES
    assert all(len(set(row)) == 32 for row in chosen.tolist())  # distinct addresses
    np.testing.assert_array_equal(chosen, even_sources(pathset, 32))
    hashes = pair_hashes(pathset, chosen)
    for bits in (1, 2, 3, 4):  # 2, 4, 8, 16 slots: exactly 32 / 2^bits flows in each, for every pair
        counts = np.stack([np.bincount((h & np.uint64(2 ** bits - 1)).astype(int), minlength=2 ** bits) for h in hashes])
        assert (counts == 32 // 2 ** bits).all(), bits
    # 32 slots: one flow each where the 150 addresses cover every class, which is most pairs
    full = [len(set((h & np.uint64(31)).tolist())) == 32 for h in hashes]
    assert np.mean(full) > 0.5
    sequential = pair_hashes(pathset, np.tile(np.arange(32), (pathset.num_pairs, 1)))
    uneven = [np.bincount((h & np.uint64(15)).astype(int), minlength=16).max() for h in sequential]
    assert np.median(uneven) >= 4  # flow f from address f: one draw, some slot gets twice its 2
    # so a group's table shares come through, where the sequential addresses stray from them
    plan = FabricPlan(pathset)
    ratios = np.where(pathset.mask, 1.0, 0.0) / pathset.mask.sum(axis=1, keepdims=True)
    even, _ = hashed_ratios(plan, ratios, 32, chosen)
    drawn, _ = hashed_ratios(plan, ratios, 32)
    assert np.abs(even - ratios).max() < 0.07 < np.abs(drawn - ratios).max()
    with pytest.raises(ValueError, match=r"need 1 <= flows_per_pair \(151\) <= pool \(150\) <= 150"):
        even_sources(pathset, 151)
    with pytest.raises(ValueError, match=r"sources of shape \(132, 8\) do not fit 132 pairs × 32 flows"):
        hashed_ratios(plan, ratios, 32, chosen[:, :8])


def test_the_replay_sends_each_flow_from_the_address_its_setting_picks():
    from envs.mininet_backend import MininetBackend, ReplaySettings

    pathset = k_shortest_paths(load_topology("abilene"), 4)
    demands = np.full(pathset.num_pairs, 1e9)
    for choice, expected in (("even", even_sources(pathset, 8)), ("sequential", np.tile(np.arange(8), (132, 1)))):
        backend = MininetBackend(pathset, replay=ReplaySettings(flows_per_pair=8, flow_addresses=choice))
        np.testing.assert_array_equal(backend.flow_sources(), expected)
        specs = backend.flow_specs(demands)
        for pair in (0, 57, 131):
            origin, destination = pathset.pairs[pair].tolist()
            sent = [f["src"] for f in specs[origin] if f["dst"] == host_ip(destination)]
            assert sent == [source_ip(origin, int(i)) for i in expected[pair]]
        backend.close()
    with pytest.raises(ValueError, match="flow_addresses must be one of even, sequential, got 'random'"):
        ReplaySettings(flow_addresses="random")
