"""Baseline policies, evaluation, `rlte compare` and the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agents import LPPolicy, StaticPolicy, evaluate_policies, first_index, ospf, shortest_path
from agents.evaluation import decide, history_for
from envs import FluidTwin
from envs.backend import TwinBackend
from experiments.cli import app
from experiments.compare import CompareSettings, run_compare
from topologies import TopologyError, k_shortest_paths, load_topology, load_traffic, union_pathsets

runner = CliRunner()


def test_static_policy_scores_equal_a_direct_twin_evaluation():
    topo = load_topology("abilene")
    tms = load_traffic("abilene-test", topo).matrices
    policy = ospf(topo)
    indices = np.arange(0, 2016, 400)
    optimum, scores = evaluate_policies([policy], tms, indices)
    direct = FluidTwin(policy.pathset).mlu(tms[indices], policy.routing.ratios)
    np.testing.assert_allclose(scores["ospf"].mlu, direct)
    np.testing.assert_allclose(scores["ospf"].normalized_mlu, direct / optimum)
    assert (scores["ospf"].normalized_mlu >= 1 - 1e-9).all()


def test_oracle_is_optimal_and_history_rules():
    topo = load_topology("abilene")
    tms = load_traffic("abilene-test", topo).matrices
    paths = k_shortest_paths(topo, 4)
    oracle, previous = LPPolicy("oracle", paths, clairvoyant=True), LPPolicy("previous", paths)
    assert first_index([oracle]) == 0 and first_index([oracle, previous]) == 1
    np.testing.assert_array_equal(history_for(previous, tms, 5), tms[4:5])
    np.testing.assert_array_equal(history_for(oracle, tms, 5), tms[5:6])
    with pytest.raises(ValueError, match="needs 1 matrices of history before index 0"):
        history_for(previous, tms, 0)
    _, scores = evaluate_policies([oracle], tms, [3, 900])
    np.testing.assert_allclose(scores["oracle"].normalized_mlu, 1.0, rtol=1e-6)


def test_single_path_policy_sends_everything_on_one_path():
    """Its decision, for any traffic: each pair's whole demand on one path, a hop-shortest one
    (hop counts from networkx's breadth-first search on the topology, not from the path set)."""
    import networkx as nx

    topology = load_topology("geant")
    policy = shortest_path(topology)
    assert isinstance(policy, StaticPolicy)
    hops = dict(nx.all_pairs_shortest_path_length(topology.to_networkx()))
    pathset = policy.pathset
    gravity = load_traffic("gravity", topology, count=2, seed=0).matrices
    for history in (gravity, np.zeros_like(gravity[:1])):  # static: the same decision whatever the traffic
        ratios = policy.route(history)
        assert ratios.shape == (pathset.num_pairs, pathset.k)
        assert set(np.unique(ratios)) <= {0.0, 1.0} and (ratios.sum(axis=1) == 1.0).all()
        for (src, dst), row, candidates in zip(pathset.pairs, ratios, pathset.paths):
            path = candidates[int(np.argmax(row))]
            assert topology.link_src[path[0]] == src and topology.link_dst[path[-1]] == dst
            assert len(path) == hops[topology.nodes[src].name][topology.nodes[dst].name], (src, dst)


# DESIGN.md reference table (every 24th TM of the test week): (median, p90)
REFERENCE = {"shortest_path": (2.43, 2.98), "ecmp": (2.25, 2.54), "ospf": (1.50, 1.64),
             "lp_paths": (1.0, 1.0), "lp_previous": (1.09, 1.20), "lp_mean": (1.08, 1.17)}


def test_compare_reproduces_the_design_reference_table():
    report = run_compare(CompareSettings(topology="abilene", traffic="abilene-test", every=24))
    assert report.tm_index == list(range(0, 2016, 24))  # index 0's history is the training week's end
    for name, (median, p90) in REFERENCE.items():
        summary = report.policies[name].summary
        assert summary["median"] == pytest.approx(median, rel=0.05), name
        assert summary["p90"] == pytest.approx(p90, rel=0.05), name
    # the load-balancing tie-break is a stronger "LP on the previous TM" than the reference practice
    assert report.policies["lp_previous_balanced"].summary["median"] < report.policies["lp_previous"].summary["median"]


def test_compare_with_synthetic_traffic_hits_the_target():
    report = run_compare(CompareSettings(topology="nsfnet", traffic="gravity", count=5, seed=1, target_mlu=0.6))
    assert report.tm_index == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(report.optimal_mlu, 0.6, rtol=1e-6)
    for name, result in report.policies.items():
        assert min(result.normalized_mlu) >= 1 - 1e-6, name
        np.testing.assert_allclose(np.array(result.mlu) / 0.6, result.normalized_mlu, rtol=1e-6)


def test_time_series_are_scaled_by_their_peak_and_training_shares_the_factor():
    settings = CompareSettings(topology="nsfnet", traffic="diurnal", count=8, seed=2, target_mlu=0.5)
    report = run_compare(settings)
    assert max(report.optimal_mlu) == pytest.approx(0.5, rel=1e-6)
    assert min(report.optimal_mlu) < 0.45  # the daily cycle survives scaling
    from experiments.compare import resolve_traffic

    traffic = resolve_traffic(settings, load_topology("nsfnet"))
    raw = load_traffic("diurnal", load_topology("nsfnet"), count=16, seed=2).matrices
    ratio_evaluated = traffic.evaluated.matrices.sum() / raw[8:].sum()
    ratio_training = traffic.training.matrices.sum() / raw[:8].sum()
    assert ratio_training == pytest.approx(ratio_evaluated, rel=1e-12)


def test_cli_compare_writes_the_documented_json(tmp_path):
    out = tmp_path / "result.json"
    result = runner.invoke(app, ["compare", "--topology", "abilene", "--traffic", "abilene-test", "--every", "400",
                                 "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "lp_previous" in result.output and "median" in result.output
    data = json.loads(out.read_text())
    assert list(data)[:5] == ["topology", "traffic", "tm_index", "optimal_mlu", "policies"]
    assert data["tm_index"] == [0, 400, 800, 1200, 1600, 2000]
    assert set(data["policies"]) >= {"shortest_path", "ecmp", "ospf", "lp_paths", "lp_previous", "lp_mean"}
    for policy in data["policies"].values():
        assert len(policy["mlu"]) == len(policy["normalized_mlu"]) == 6
        np.testing.assert_allclose(np.array(policy["mlu"]) / data["optimal_mlu"], policy["normalized_mlu"])


def test_cli_compare_prints_the_median_optimum_the_json_has(tmp_path):
    """The table's footer and the JSON agree on the median, also for an even count of matrices
    (the mean of the middle two, not the upper one)."""
    out = tmp_path / "result.json"
    result = runner.invoke(app, ["compare", "--topology", "nsfnet", "--traffic", "gravity", "--count", "4",
                                 "--seed", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    optimum = json.loads(out.read_text())["optimal_mlu"]
    assert len(optimum) == 4
    assert f"{sorted(optimum)[2]:.4g}" != f"{np.median(optimum):.4g}"  # the case tells the two apart
    printed = re.search(r"optimal MLU \(exact multicommodity flow\): median (\S+) ", result.output)
    assert printed is not None, result.output
    assert printed.group(1) == f"{np.median(optimum):.4g}"


def test_solving_an_lp_prints_no_solver_banner(capfd):
    """HiGHS (1.16) writes "Running HiGHS ..." to the process's stdout once, when the first
    solver is built, before any option can be set. A fresh interpreter solves both LPs; what
    reaches its file descriptors 1 and 2 is captured here."""
    code = ("import numpy as np; from agents.lp import optimal_mlu, path_lp; from tests.networks import triangle; "
            "from topologies import k_shortest_paths; t = triangle(); m = np.zeros((3, 3)); m[0, 2] = 9e6; "
            "print('mlu', optimal_mlu(t, m)[0], path_lp(k_shortest_paths(t, 2), m).mlu)")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)
    out, err = capfd.readouterr()
    # what the child printed is here: 9 Mb/s a->c splits 5/9 via b (5 Mb/s) and 4/9 direct (4 Mb/s)
    [line] = [line for line in out.splitlines() if line.startswith("mlu ")]
    assert [float(x) for x in line.split()[1:]] == pytest.approx([1.0, 1.0], rel=1e-6), out
    assert "HiGHS" not in out and "HiGHS" not in err, out + err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--topology", "abilen"], "unknown topology 'abilen'"),
        (["--topology", "geant", "--traffic", "abilene-test"], "measured on topology 'abilene'"),
        (["--traffic", "poisson"], "unknown traffic 'poisson'"),
        (["--every", "0"], "--every must be >= 1"),
        (["--start", "5000"], "no matrices to evaluate"),
        (["--traffic", "gravity", "--topology", "nsfnet", "--target-mlu", "-1"], "target MLU must be positive"),
        (["--scale-mode", "median"], "--scale-mode must be one of"),
        (["--paths", "0"], "positive integer"),
    ],
)
def test_cli_bad_input_gets_one_clear_line_and_status_2(args, message):
    result = runner.invoke(app, ["compare", "--no-progress", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_failed_run_leaves_an_existing_output_untouched(tmp_path):
    out = tmp_path / "keep.json"
    out.write_text('{"precious": true}')
    result = runner.invoke(app, ["compare", "--traffic", "poisson", "--out", str(out), "--no-progress"])
    assert result.exit_code == 2
    assert out.read_text() == '{"precious": true}'
    missing = runner.invoke(app, ["compare", "--out", str(tmp_path / "no" / "dir.json"), "--no-progress"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_topo_commands(tmp_path):
    listing = runner.invoke(app, ["topo", "list"])
    assert listing.exit_code == 0
    assert "abilene" in listing.output and "Geant2012" in listing.output and "276 networks" in listing.output
    png = tmp_path / "abilene.png"
    shown = runner.invoke(app, ["topo", "show", "abilene", "--png", str(png), "--links"])
    assert shown.exit_code == 0, shown.output
    assert "OSPF weights from file" in shown.output and "LOSAng" in shown.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    zoo = runner.invoke(app, ["topo", "show", "Bandcon"])
    assert "repair: kept the largest connected component" in zoo.output
    bad = runner.invoke(app, ["topo", "show", "nowhere"])
    assert bad.exit_code == 2 and "unknown topology" in bad.output


def test_policies_on_a_live_backend_are_scored_by_what_it_measured_beside_the_twin():
    topo = load_topology("abilene")
    tms = load_traffic("abilene-test", topo).matrices
    paths = k_shortest_paths(topo, 4)
    policies = [shortest_path(topo), ospf(topo), LPPolicy("lp_previous", paths)]
    carried = union_pathsets(paths, *(p.pathset for p in policies))
    backend = TwinBackend(carried, load_factor=1.25)  # a stand-in live backend: headers add load
    indices = np.array([24, 500, 1000])
    optimum, twin_scores = evaluate_policies(policies, tms, indices)
    runs = []
    _, live = evaluate_policies(policies, tms, indices, optimal=optimum, backend=backend,
                                progress=lambda name, count: runs.append((name, count)))
    assert runs == [(p.name, 1) for p in policies for _ in indices]  # one unit per measured run
    for policy in policies:
        twin, measured = twin_scores[policy.name], live[policy.name]
        np.testing.assert_allclose(measured.twin_normalized_mlu, twin.normalized_mlu)
        # the policy's own paths lifted onto the carried set route the same load: 1.25 × the twin's MLU
        np.testing.assert_allclose(measured.mlu, 1.25 * twin.mlu, rtol=1e-9)
        np.testing.assert_allclose(measured.normalized_mlu, 1.25 * twin.normalized_mlu, rtol=1e-9)
        ratios, _ = decide(policy, tms, indices)
        ratios = np.broadcast_to(ratios, (len(indices), *policy.pathset.mask.shape))
        scaled = TwinBackend(policy.pathset, 1.25)
        direct = [scaled.run(policy.pathset.demands(tms[t]), r) for t, r in zip(indices, ratios)]
        np.testing.assert_allclose(measured.drop_fraction, [m.drops_bps / m.offered_bps for m in direct], atol=1e-12)
        assert live[policy.name].summary()["twin_median"] == pytest.approx(np.median(twin.normalized_mlu))
    assert (live["shortest_path"].drop_fraction > 0).all()  # the raw Abilene volumes overload hop-shortest paths
    with pytest.raises(TopologyError, match="is not in the target path set"):
        evaluate_policies([ospf(topo)], tms, indices, optimal=optimum, backend=TwinBackend(paths))


def test_eval_usage_and_errors_print_their_brackets():
    """Rich markup must not eat the optional arguments out of a message or the help."""
    missing = runner.invoke(app, ["eval"])
    assert missing.exit_code == 2 and "rlte eval run=runs/<run directory> [eval.every=24] [out=FILE]" in missing.output
    usage = runner.invoke(app, ["eval", "--help"])
    assert usage.exit_code == 0 and "[backend=mininet] [topology=NAME traffic=NAME] [eval.every=24]" in usage.output
    listing = runner.invoke(app, ["--help"])
    assert "[eval.every=24] [out=FILE.json]" in listing.output


def test_train_help_names_every_shipped_agent():
    """`rlte --help` lists the agents `rlte train agent=...` takes, read from conf/agent (the default first)."""
    from experiments.cli import CONFIG_DIR

    import typer

    listed = re.search(r"agent=([a-z0-9_|]+)\]", typer.main.get_command(app).commands["train"].help).group(1)
    assert listed.split("|")[0] == "ppo_costs_spread"
    assert set(listed.split("|")) == {path.stem for path in (CONFIG_DIR / "agent").glob("*.yaml")}