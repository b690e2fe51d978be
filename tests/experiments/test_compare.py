"""`rlte compare` and the command line: the DESIGN.md reference table, synthetic and
time-series traffic, the JSON and the printed table, no solver banner, one-line refusals of
bad input, `rlte topo`, and the usage of `rlte eval` and `rlte train`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.compare import CompareSettings, run_compare
from topologies import load_topology, load_traffic

runner = CliRunner()


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
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True)
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
