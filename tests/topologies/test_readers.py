"""Every reader on real files and on malformed ones."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest

from topologies import (TopologyError, load_topology, read_abilene, read_graphml, read_node_link, read_sndlib,
                        read_sndlib_demands, read_topology)
from topologies.catalog import ZOO_ARCHIVE
from topologies.resources import DATA

HERE = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    """The real Topology Zoo files, unpacked from the shipped archive."""
    target = tmp_path_factory.mktemp("zoo")
    with tarfile.open(ZOO_ARCHIVE) as archive:
        for name in ("Geant2012", "Nsfnet", "Abilene", "Interoute", "Bandcon", "Arnes"):
            member = archive.getmember(f"graphml/{name}.graphml")
            (target / f"{name}.graphml").write_bytes(archive.extractfile(member).read())
    return target


# ---------------------------------------------------------------- Abilene text format
def test_abilene_reader_on_the_real_file():
    topo = read_abilene(DATA / "abilene" / "Abilene.topology.txt")
    assert (topo.num_nodes, topo.num_links) == (12, 30)
    link = topo.links[3]  # "3 1 5 587 2480000": ATLA -> IPLS, the one 2.48 Gb/s link pair
    assert (link.src, link.dst, link.weight, link.capacity_bps) == ("1", "5", 587.0, 2.48e9)
    assert sorted(set(topo.capacities)) == [2.48e9, 9.92e9]
    assert all(l.weight is not None for l in topo.links)


@pytest.mark.parametrize(
    "text, message",
    [
        ("hello\n", "not the Abilene text format"),
        ("Node_num: x Edge_num: 2\nheader\n", "cannot read 'Node_num"),
        ("Node_num: 2\tEdge_num: 2\nheader\n0\t0\t1\t1\n1\t1\t0\t1\t5\n", "expected 5 fields"),
        ("Node_num: 2\tEdge_num: 2\nheader\n0\t0\t1\t1\tfast\n1\t1\t0\t1\t5\n", "capacity 'fast' is not a number"),
        ("Node_num: 2\tEdge_num: 2\nheader\n0\t0\t7\t1\t5\n1\t1\t0\t1\t5\n", "node 7 outside"),
        ("Node_num: 2\tEdge_num: 3\nheader\n0\t0\t1\t1\t5\n1\t1\t0\t1\t5\n", "header says 3 links"),
        ("Node_num: 2\tEdge_num: 2\nheader\n0\t0\t1\t1\t0\n1\t1\t0\t1\t5\n", "non-positive"),
        ("Node_num: 3\tEdge_num: 2\nheader\n0\t0\t1\t1\t5\n1\t1\t0\t1\t5\n", "not strongly connected"),
    ],
)
def test_abilene_reader_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(TopologyError, match=message) as info:
        read_abilene(path)
    assert "bad.txt" in str(info.value)  # errors name the file


# ---------------------------------------------------------------- Topology Zoo GraphML
def test_graphml_reader_on_real_geant(zoo_dir):
    topo = read_graphml(zoo_dir / "Geant2012.graphml")
    assert (topo.num_nodes, topo.num_links) == (40, 122)
    assert sorted(n.name for n in topo.nodes if not n.has_coordinates) == ["BY", "MD", "UA"]
    assert "LinkSpeedRaw from file on 39 of 61 links" in " ".join(topo.notes)
    assert "great-circle distance on 58 of 61 links, default 1 ms" in " ".join(topo.notes)
    ua = next(l for l in topo.links if "UA" in (l.src, l.dst))
    assert ua.delay_s == 1e-3
    # Amsterdam (NL) - Brussels (BE): ~174 km great circle -> ~0.87 ms at 2e8 m/s
    link = next(l for l in topo.links if {l.src, l.dst} == {"NL", "BE"})
    assert link.delay_s == pytest.approx(0.87e-3, rel=0.05)


def test_graphml_capacity_rules(zoo_dir):
    path = zoo_dir / "Nsfnet.graphml"
    default = read_graphml(path, capacity="default", default_capacity_bps=1e9)
    assert set(default.capacities) == {1e9}
    degree = read_graphml(path, capacity="degree", default_capacity_bps=1e9)
    graph = degree.to_networkx()
    for link in degree.links:
        assert link.capacity_bps == 1e9 * min(graph.out_degree(link.src), graph.out_degree(link.dst))
    with pytest.raises(TopologyError, match="unknown capacity rule"):
        read_graphml(path, capacity="guess")


def test_graphml_merges_parallel_edges_summing_capacity(tmp_path):
    path = tmp_path / "parallel.graphml"
    path.write_text("""<?xml version="1.0" encoding="utf-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key attr.name="LinkSpeedRaw" attr.type="double" for="edge" id="s"/>
  <key attr.name="label" attr.type="string" for="node" id="l"/>
  <graph edgedefault="undirected">
    <node id="0"><data key="l">A</data></node><node id="1"><data key="l">B</data></node>
    <edge source="0" target="1"><data key="s">1000000000.0</data></edge>
    <edge source="1" target="0"><data key="s">2500000000.0</data></edge>
  </graph>
</graphml>""")
    topo = read_graphml(path)
    assert [(l.src, l.dst, l.capacity_bps) for l in topo.links] == [("A", "B", 3.5e9), ("B", "A", 3.5e9)]
    assert any("merged 1 parallel" in n for n in topo.notes)
    assert any("no coordinates" in n for n in topo.notes)


def test_graphml_self_loop_and_disconnected_need_repair(zoo_dir):
    with pytest.raises(TopologyError, match="self-loop.*repair=True"):
        read_graphml(zoo_dir / "Interoute.graphml")
    with pytest.raises(TopologyError, match="not strongly connected.*repair=True"):
        read_graphml(zoo_dir / "Bandcon.graphml")
    repaired = read_graphml(zoo_dir / "Bandcon.graphml", repair=True)
    assert any("kept the largest connected component" in n for n in repaired.notes)
    assert repaired.num_nodes < 22


@pytest.mark.parametrize(
    "reader, suffix, content, message",
    [
        (read_graphml, "graphml", "<graphml><graph><node id='a'></graph>", "malformed GraphML"),
        (read_graphml, "graphml", "<?xml version='1.0'?><graphml xmlns='http://graphml.graphdrawing.org/xmlns'>"
                                  "<graph edgedefault='undirected'/></graphml>", "no nodes"),
        (read_node_link, "json", "{not json", "malformed JSON"),
        (read_node_link, "json", '{"nodes": []}', "not a node-link graph"),
        (read_node_link, "json", '{"directed": true, "nodes": [{"id": 0}, {"id": 1}], '
                                 '"links": [{"source": 0, "target": 1}]}', "no 'capacity' attribute"),
        (read_node_link, "json", '{"directed": true, "nodes": [{"id": 0}, {"id": 1}], '
                                 '"links": [{"source": 0, "target": 1, "capacity": "x"}]}', "is not a number"),
        (read_node_link, "json", '{"directed": true, "nodes": [{"id": 0}, {"id": 1}], '
                                 '"links": [{"source": 0, "target": 1, "capacity": 5}]}', "not strongly connected"),
    ],
)
def test_graphml_and_node_link_reject_malformed_files(tmp_path, reader, suffix, content, message):
    path = tmp_path / f"bad.{suffix}"
    path.write_text(content)
    with pytest.raises(TopologyError, match=message) as info:
        reader(path)
    assert "bad." in str(info.value)  # errors name the file


def test_missing_unreadable_and_binary_files(tmp_path):
    with pytest.raises(TopologyError, match="no such file"):
        read_graphml(tmp_path / "nope.graphml")
    with pytest.raises(TopologyError, match="is a directory"):
        read_graphml(tmp_path)
    binary = tmp_path / "binary.graphml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TopologyError, match="not UTF-8"):
        read_graphml(binary)
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(gzip.compress(b'{"nodes": []}')[:-6])
    with pytest.raises(TopologyError, match="cannot read"):
        read_node_link(truncated)


# ---------------------------------------------------------------- SNDlib native
def test_sndlib_reader_agrees_with_the_abilene_text_reader():
    """Two independent readers of the same network must give the same links and capacities."""
    sndlib = read_sndlib(HERE / "abilene_sndlib.txt")
    text = load_topology("abilene")
    assert set(sndlib.node_names) == set(text.node_names)
    as_set = lambda t: {(l.src, l.dst, l.capacity_bps) for l in t.links}  # noqa: E731
    assert as_set(sndlib) == as_set(text)
    # coordinates are (longitude latitude) in SNDlib
    assert sndlib.nodes[2].latitude == pytest.approx(41.878) and sndlib.nodes[2].longitude == pytest.approx(-87.630)
    by_pair = {(l.src, l.dst): l.delay_s for l in text.links}
    for link in sndlib.links:
        assert link.delay_s == pytest.approx(by_pair[(link.src, link.dst)], abs=1e-6)


def test_sndlib_capacity_from_largest_module_and_demands():
    topo = read_sndlib(HERE / "abilene_sndlib.txt")
    ipls = next(l for l in topo.links if (l.src, l.dst) == ("ATLAng", "IPLSng"))
    assert ipls.capacity_bps == 2480e6  # pre-installed 0, modules 620 and 2480 Mbit/s
    demands = read_sndlib_demands(HERE / "abilene_sndlib.txt", topo)
    i = topo.node_index
    assert demands[i["ATLAM5"], i["CHINng"]] == pytest.approx(120.5e6)
    assert demands[i["NYCMng"], i["LOSAng"]] == pytest.approx(74.25e6)  # two demands add up
    assert demands.sum() == pytest.approx((120.5 + 64.25 + 10) * 1e6)
    with pytest.raises(TopologyError, match="not strongly connected"):
        read_sndlib(HERE / "abilene_sndlib.txt", directed=True)  # one-way links cannot be


def test_sndlib_directed_links_stay_one_way(tmp_path):
    path = tmp_path / "ring.txt"
    path.write_text("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n B ( 1 0 )\n C ( 0 1 )\n)\n"
                    "LINKS (\n L1 ( A B ) 10 0 0 0 ( )\n L2 ( B C ) 10 0 0 0 ( )\n L3 ( C A ) 10 0 0 0 ( )\n)\n")
    assert read_sndlib(path, directed=True).num_links == 3
    assert read_sndlib(path).num_links == 6


@pytest.mark.parametrize(
    "body, message",
    [
        ("NODES (\n A ( 0 0 )\n)\n", "not an SNDlib native network file"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n", "not closed"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n)\n", "missing LINKS"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A 0 0\n)\nLINKS (\n)\n", "malformed node line"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( x 0 )\n)\nLINKS (\n)\n", "'x' is not a number"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n B ( 1 1 )\n)\n"
         "LINKS (\n L ( A Z ) 1 0 0 0 ( )\n)\n", "unknown node 'Z'"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n B ( 1 1 )\n)\n"
         "LINKS (\n L ( A B ) 0 0 0 0 ( )\n)\n", "no positive pre-installed or module capacity"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n B ( 1 1 )\n)\n"
         "LINKS (\n L ( A B ) 0 0 0 0 ( 5 )\n)\n", r"\(capacity cost\) pairs"),
        ("?SNDlib native format; type: network; version: 1.0\nNODES (\n A ( 0 0 )\n A ( 1 1 )\n)\nLINKS (\n)\n",
         "duplicate node"),
        ("?SNDlib native format; type: network; version: 1.0\nstray\n", "expected a section opening"),
    ],
)
def test_sndlib_rejects_malformed_files(tmp_path, body, message):
    path = tmp_path / "bad.txt"
    path.write_text(body)
    with pytest.raises(TopologyError, match=message):
        read_sndlib(path)


# ---------------------------------------------------------------- node-link JSON
def test_node_link_reader_on_real_b4_and_kdl():
    b4 = read_node_link(DATA / "wan" / "B4.json")
    assert (b4.num_nodes, b4.num_links) == (12, 38)
    assert b4.node_names == tuple(str(i) for i in range(12))  # numeric ids sorted, not file order
    assert set(b4.capacities) == {5000e6}
    kdl = read_node_link(DATA / "wan" / "Kdl.json")
    assert (kdl.num_nodes, kdl.num_links) == (754, 1790)


def test_read_topology_detects_the_format(zoo_dir):
    assert read_topology(zoo_dir / "Nsfnet.graphml").num_nodes == 13
    assert read_topology(HERE / "abilene_sndlib.txt").num_nodes == 12
    assert read_topology(DATA / "wan" / "B4.json").num_nodes == 12
    assert read_topology(DATA / "abilene" / "Abilene.topology.txt").num_nodes == 12


def test_read_topology_unknown_format(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n")
    with pytest.raises(TopologyError, match="unknown topology format"):
        read_topology(path)
