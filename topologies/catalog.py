"""Topologies by name: the curated set, every Topology Zoo network, and generators.

Names:

* curated (lower case): ``abilene`` (real OSPF weights and capacities), ``geant``
  (Zoo Geant2012), ``nsfnet`` (Zoo Nsfnet), ``b4``, ``uscarrier``, ``kdl``, ``asn2k``;
* any Topology Zoo file name, e.g. ``Geant2012`` or ``zoo:Abilene`` (the ``zoo:`` prefix is
  needed only where a Zoo name equals a curated one ignoring case);
* generators with arguments after a colon: ``fat_tree:8``, ``leaf_spine:4,8``,
  ``waxman:n=30,seed=2``;
* a path to a file in any supported format.

Zoo networks are loaded with ``repair=True`` so that all of them load; what was
repaired is listed in ``Topology.notes``.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .generators import fat_tree, leaf_spine, waxman
from .model import Topology, TopologyError
from .readers import read_abilene, read_node_link, read_topology
from .readers.graphml import parse_graphml
from .resources import DATA

ZOO_ARCHIVE = DATA / "zoo" / "graphml.tar.gz"


def _abilene() -> Topology:
    meta = json.loads((DATA / "abilene" / "nodes.json").read_text())
    names = [row[0] for row in meta["nodes"]]
    coords = {row[0]: (row[1], row[2]) for row in meta["nodes"]}
    return read_abilene(DATA / "abilene" / "Abilene.topology.txt", name="abilene",
                        node_names=names, coordinates=coords)


def _wan(file: str, name: str) -> Callable[[], Topology]:
    return lambda: read_node_link(DATA / "wan" / file, name=name)


def _zoo(file: str, name: str) -> Callable[[], Topology]:
    return lambda: load_zoo(file, name=name)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    load: Callable[[], Topology]


CURATED: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in [
        CatalogEntry("abilene", "Abilene/Internet2, 12 nodes, real OSPF weights and capacities", _abilene),
        CatalogEntry("geant", "GEANT 2012 (Topology Zoo Geant2012), 40 nodes", _zoo("Geant2012", "geant")),
        CatalogEntry("nsfnet", "NSFNET T1 backbone (Topology Zoo Nsfnet), 13 nodes", _zoo("Nsfnet", "nsfnet")),
        CatalogEntry("b4", "Google B4, 12 nodes", _wan("B4.json", "b4")),
        CatalogEntry("uscarrier", "US Carrier, 158 nodes", _wan("UsCarrier.json", "uscarrier")),
        CatalogEntry("kdl", "Kentucky Datalink, 754 nodes", _wan("Kdl.json", "kdl")),
        CatalogEntry("asn2k", "AS-level graph, 1739 nodes", _wan("ASN2k.json", "asn2k")),
    ]
}

GENERATORS: dict[str, Callable[..., Topology]] = {
    "fat_tree": fat_tree,
    "leaf_spine": leaf_spine,
    "waxman": waxman,
}


@lru_cache(maxsize=1)
def _zoo_files() -> dict[str, bytes]:
    """File name -> GraphML bytes, decompressed once (about 6 MB)."""
    with tarfile.open(ZOO_ARCHIVE) as archive:
        return {Path(m.name).stem: archive.extractfile(m).read()
                for m in archive.getmembers() if m.name.endswith(".graphml")}


def zoo_names() -> tuple[str, ...]:
    """Every Topology Zoo network in the bundled archive, by file name."""
    return tuple(sorted(_zoo_files()))


def load_zoo(file_name: str, *, name: str | None = None, capacity: str = "linkspeed",
             default_capacity_bps: float = 10e9, repair: bool = True) -> Topology:
    """A Topology Zoo network from the bundled archive."""
    if file_name not in zoo_names():
        raise TopologyError(f"no Topology Zoo network named {file_name!r}{_suggest(file_name, zoo_names())}")
    text = _zoo_files()[file_name].decode("utf-8")
    return parse_graphml(text, source=Path(f"zoo/{file_name}.graphml"), name=name or file_name,
                         capacity=capacity, default_capacity_bps=default_capacity_bps, repair=repair)


def _suggest(name: str, candidates) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _parse_arguments(text: str) -> tuple[list, dict]:
    args, kwargs = [], {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.rpartition("=")
        parsed: int | float | str
        try:
            parsed = int(value)
        except ValueError:
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
        if key:
            kwargs[key.strip()] = parsed
        else:
            args.append(parsed)
    return args, kwargs


def load_topology(name: str) -> Topology:
    """A topology by catalog name, generator spec or file path (see module docstring).

    Named topologies are cached (they are immutable); files are read afresh every time.
    """
    if not isinstance(name, str) or not name.strip():
        raise TopologyError(f"topology name must be a non-empty string, got {name!r}")
    name = name.strip()
    path = Path(name).expanduser()
    if path.is_file() and name not in CURATED and name not in zoo_names():
        return read_topology(path)
    return _load_named(name)


@lru_cache(maxsize=64)
def _load_named(name: str) -> Topology:
    if name in CURATED:
        return CURATED[name].load()
    if name.startswith("zoo:"):
        return load_zoo(name[4:])
    base, _, arguments = name.partition(":")
    if base in GENERATORS:
        args, kwargs = _parse_arguments(arguments)
        try:
            return GENERATORS[base](*args, **kwargs)
        except TypeError as exc:
            raise TopologyError(f"bad arguments for {base}: {exc}") from None
    if name in zoo_names():
        return load_zoo(name)
    lowered = {n.lower(): n for n in zoo_names()}
    if name.lower() in lowered:
        return load_zoo(lowered[name.lower()])
    known = list(CURATED) + list(GENERATORS) + list(zoo_names())
    raise TopologyError(f"unknown topology {name!r}{_suggest(name, known)}; "
                        "see `rlte topo list` for names, or give a file path")


def list_topologies() -> dict[str, list[str]]:
    """Names by group, for ``rlte topo list``."""
    return {"curated": list(CURATED), "generators": [f"{g}:ARGS" for g in GENERATORS], "zoo": list(zoo_names())}
