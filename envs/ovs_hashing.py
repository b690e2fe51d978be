"""Which path each replayed flow takes through Open vSwitch's select groups.

The twin splits a pair's traffic exactly by its ratios. The emulated network splits it flow
by flow: the pair's ingress switch has a select group with one bucket per path, weighted by
the ratios (:meth:`controllers.fabric.FabricPlan.buckets`), and OVS (3.1, userspace datapath)
sends every packet of a flow down the bucket its hash picks:

* the hash is OVS's symmetric L3/L4 hash without UDP ports: source ⊕ destination address
  and the protocol, mixed by its murmur-style ``hash_add`` and ``hash_finish``
  (:func:`symmetric_l3l4_hash`);
* the bucket is looked up by the hash's low bits in a table of 16 to 256 slots that OVS
  deals to the buckets in proportion to their weights by Webster's method
  (:func:`dp_hash_table`).

So which path a flow takes is fixed by its addresses and the weights, not drawn anew per
matrix, and with few flows per pair a routing's measured split can sit well away from its
ratios on every matrix alike. :func:`hashed_ratios` gives, per pair, the share of the
replay's flows (:meth:`envs.mininet_backend.MininetBackend.flow_specs`: each flow of a pair
comes from its own source address of the origin) that each path gets; routed through the twin
it predicts what the emulation measures, less the headers (``bench/ovs_hashing.py``).
:func:`even_sources` picks, per pair, source addresses whose hashes cover the slots evenly,
so that a few flows split like a large aggregate (the replay's default,
``ReplaySettings.flow_addresses="even"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controllers.fabric import MAX_SOURCE_ADDRESSES, FabricPlan, host_ip, source_ip
from topologies import PathSet

MAX_HASH_SLOTS = 256  # OVS's MAX_SELECT_GROUP_HASH_VALUES: a group needing more falls back to another method
UDP = 17
_MASK = np.uint64(0xFFFFFFFF)


def _rotate_left(x: np.ndarray, bits: int) -> np.ndarray:
    return ((x << np.uint64(bits)) | (x >> np.uint64(32 - bits))) & _MASK


def _hash_add(hash_: np.ndarray, data: np.ndarray) -> np.ndarray:
    """OVS's ``hash_add`` (``mhash_add``, murmur3's block step) on uint32 values held in uint64."""
    data = (data * np.uint64(0xCC9E2D51)) & _MASK
    data = (_rotate_left(data, 15) * np.uint64(0x1B873593)) & _MASK
    hash_ = _rotate_left(hash_ ^ data, 13)
    return (hash_ * np.uint64(5) + np.uint64(0xE6546B64)) & _MASK


def _hash_finish(hash_: np.ndarray) -> np.ndarray:
    """OVS's ``hash_finish`` with a zero final word (``mhash_finish``, murmur3's fmix32)."""
    hash_ = hash_ ^ (hash_ >> np.uint64(16))
    hash_ = (hash_ * np.uint64(0x85EBCA6B)) & _MASK
    hash_ = hash_ ^ (hash_ >> np.uint64(13))
    hash_ = (hash_ * np.uint64(0xC2B2AE35)) & _MASK
    return hash_ ^ (hash_ >> np.uint64(16))


def address_word(address: str) -> int:
    """An IPv4 address as OVS's hash reads it: the four bytes in network order, loaded as a
    little-endian 32-bit word (x86)."""
    parts = [int(part) for part in address.split(".")]
    if len(parts) != 4 or not all(0 <= part <= 255 for part in parts):
        raise ValueError(f"not an IPv4 address: {address!r}")
    return int.from_bytes(bytes(parts), "little")


def symmetric_l3l4_hash(sources: Sequence[str], destinations: Sequence[str], protocol: int = UDP,
                        basis: int = 0) -> np.ndarray:
    """OVS's ``flow_hash_symmetric_l3l4`` without L4 ports (what its dp_hash select groups
    hash UDP flows by), one uint32 per (source, destination) address pair."""
    xor = np.array([address_word(s) ^ address_word(d) for s, d in zip(sources, destinations, strict=True)],
                   dtype=np.uint64)
    hash_ = _hash_add(np.full(xor.shape, basis, dtype=np.uint64), xor)
    hash_ = _hash_add(hash_, np.full(xor.shape, protocol, dtype=np.uint64))
    return _hash_finish(hash_ ^ np.uint64(basis))


def dp_hash_table(weights: Sequence[int]) -> np.ndarray | None:
    """The bucket (index into ``weights``) of each hash slot of a select group, as OVS deals
    them: max(16, the power of two ≥ total ÷ smallest weight) slots, each to the bucket with the
    largest weight ÷ (2·slots so far + 1), the first on ties (Webster's method). None where OVS
    would need more than :data:`MAX_HASH_SLOTS` and picks buckets another way (not modelled)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or (weights <= 0).any():
        raise ValueError(f"a select group needs positive bucket weights, got {weights.tolist()}")
    needed = int(np.ceil(weights.sum() / weights.min()))
    slots = max(16, 1 << (needed - 1).bit_length())
    if slots > MAX_HASH_SLOTS:
        return None
    dealt = np.zeros(len(weights))
    table = np.empty(slots, dtype=np.int64)
    for slot in range(slots):
        winner = int(np.argmax(weights / (2 * dealt + 1)))
        table[slot] = winner
        dealt[winner] += 1
    return table


def pair_hashes(pathset: PathSet, sources: np.ndarray) -> np.ndarray:
    """The flow hash of source address ``sources[p, f]`` (an index of
    :func:`controllers.fabric.source_ip`) of each pair ``p``'s origin to its destination (P, F)."""
    sources = np.asarray(sources)
    hashes = np.empty(sources.shape, dtype=np.uint64)
    for pair, (origin, destination) in enumerate(pathset.pairs.tolist()):
        hashes[pair] = symmetric_l3l4_hash([source_ip(origin, int(i)) for i in sources[pair]],
                                           [host_ip(destination)] * sources.shape[1])
    return hashes


def even_sources(pathset: PathSet, flows_per_pair: int, pool: int = MAX_SOURCE_ADDRESSES) -> np.ndarray:
    """For each pair, ``flows_per_pair`` of the ``pool`` source addresses whose hashes cover
    the low bits evenly (P, F): each pick is the address whose hash falls in the emptiest class
    of the last bit, then of the last two bits, and so on to eight (a select group's slot is
    the hash's last 4–8 bits). A table of 2^b slots then gets the same number of flows in every
    slot, as a large aggregate of flows would, instead of one draw of a few, as far as the
    pool allows: 32 flows of 150 addresses fill every 16-slot table evenly and most 32-slot
    ones; 128 flows leave the pool too few to choose from. Which addresses a pair gets depends
    on its addresses only, not on the routing."""
    if not 1 <= flows_per_pair <= pool <= MAX_SOURCE_ADDRESSES:
        raise ValueError(f"need 1 <= flows_per_pair ({flows_per_pair}) <= pool ({pool}) <= {MAX_SOURCE_ADDRESSES}")
    candidates = pair_hashes(pathset, np.tile(np.arange(pool), (pathset.num_pairs, 1)))
    bits = np.arange(1, 9)
    base = flows_per_pair + 1  # counts never exceed the flow count: one digit each, coarsest first
    weight = base ** (len(bits) - bits).astype(np.int64)
    chosen = np.empty((pathset.num_pairs, flows_per_pair), dtype=np.int64)
    for pair in range(pathset.num_pairs):
        classes = (candidates[pair][:, None] & ((np.uint64(1) << bits.astype(np.uint64)) - np.uint64(1))).astype(np.int64)
        counts = np.zeros((len(bits), 256), dtype=np.int64)
        free = np.ones(pool, dtype=bool)
        for flow in range(flows_per_pair):
            key = (counts[np.arange(len(bits)), classes] * weight).sum(axis=1)
            pick = int(np.argmin(np.where(free, key, np.iinfo(np.int64).max)))
            chosen[pair, flow], free[pick] = pick, False
            counts[np.arange(len(bits)), classes[pick]] += 1
    return chosen


FLOW_ADDRESSES = ("even", "sequential")  # how the replay picks each flow's source address


def flow_sources(pathset: PathSet, flows_per_pair: int, choice: str) -> np.ndarray:
    """The source address index of each pair's flows (P, F): ``"even"`` by :func:`even_sources`,
    ``"sequential"`` flow f from address f."""
    if choice not in FLOW_ADDRESSES:
        raise ValueError(f"flow_addresses must be one of {', '.join(FLOW_ADDRESSES)}, got {choice!r}")
    if choice == "even":
        return even_sources(pathset, flows_per_pair)
    return np.tile(np.arange(flows_per_pair), (pathset.num_pairs, 1))


def hashed_ratios(plan: FabricPlan, ratios: np.ndarray, flows_per_pair: int,
                  sources: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the share of its ``flows_per_pair`` replayed flows that OVS's select group
    sends down each path of ``plan.pathset`` (P, K), for the split ``ratios`` (P, K) the
    controller installs; and which pairs keep their ratios because OVS would not table their
    group (P,) bool (a weight below 1/256 of the group's total, see :func:`dp_hash_table`;
    none since the controller apportions every group's weights to sum to 256).
    ``sources`` (P, F): each flow's source address index (default: flow f from address f)."""
    pathset = plan.pathset
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.shape != (pathset.num_pairs, pathset.k):
        raise ValueError(f"ratios of shape {ratios.shape} do not fit the plan's path set "
                         f"({pathset.num_pairs} pairs × {pathset.k} paths)")
    if flows_per_pair < 1:
        raise ValueError(f"flows_per_pair must be at least 1, got {flows_per_pair}")
    if sources is None:
        sources = flow_sources(pathset, flows_per_pair, "sequential")
    elif np.shape(sources) != (pathset.num_pairs, flows_per_pair):
        raise ValueError(f"sources of shape {np.shape(sources)} do not fit {pathset.num_pairs} pairs × "
                         f"{flows_per_pair} flows")
    all_hashes = pair_hashes(pathset, sources)
    shares = np.zeros_like(ratios)
    untabled = np.zeros(pathset.num_pairs, dtype=bool)
    for pair in range(pathset.num_pairs):
        buckets = plan.buckets(pair, ratios[pair])
        table = dp_hash_table([bucket.weight for bucket in buckets])
        if table is None:
            shares[pair], untabled[pair] = ratios[pair], True
            continue
        hashes = all_hashes[pair]
        chosen = table[(hashes & np.uint64(len(table) - 1)).astype(np.int64)]
        slots = np.array([bucket.tag for bucket in buckets]) - plan.tag(pair, 0)
        np.add.at(shares[pair], slots[chosen], 1.0 / flows_per_pair)
    return shares, untabled


__all__ = ["FLOW_ADDRESSES", "MAX_HASH_SLOTS", "address_word", "dp_hash_table", "even_sources", "flow_sources",
           "hashed_ratios", "pair_hashes",
           "symmetric_l3l4_hash"]
