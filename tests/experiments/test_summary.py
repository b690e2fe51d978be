"""`rlte summary`: several runs' tables pooled by what they scored, against hand-computed numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.summary import RunTable, summarize, table_files

runner = CliRunner()


def write_run(run_dir: Path, seed: int, medians: dict[str, float], *, steps: int = 600000, every: int = 24,
              name: str = "eval.json", topology: str = "abilene") -> Path:
    """A run directory as rlte train leaves it: config.yaml and a table (p90 = median + 0.1, max = median + 0.3)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"seed: {seed}\nthreads: 1\nagent:\n  name: ppo_costs\n"
                                         f"  total_timesteps: {steps}\neval:\n  every: {every}\n")
    report = {"topology": topology, "traffic": "abilene-test", "agent": "ppo_costs", "seed": seed,
              "backend": "twin", "tm_index": list(range(0, 96, every)),
              "policies": {policy: {"summary": {"median": m, "p90": m + 0.1, "max": m + 0.3, "mean": m,
                                                "decision_time_s": 0.001}, "normalized_mlu": [m]}
                           for policy, m in medians.items()}}
    (run_dir / name).write_text(json.dumps(report))
    return run_dir


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    """Three seeds of one config, one run of another, and a seed scored on another network."""
    root = tmp_path / "multirun"
    write_run(root / "0_seed0", 0, {"ppo_costs": 1.05, "lp_previous": 1.062, "ecmp": 2.2})
    write_run(root / "1_seed1", 1, {"ppo_costs": 1.07, "lp_previous": 1.062, "ecmp": 2.2})
    write_run(root / "2_seed2", 2, {"ppo_costs": 1.06, "lp_previous": 1.062})  # scored without ecmp
    write_run(root / "longer", 0, {"ppo_costs": 1.04, "lp_previous": 1.062}, steps=1200000)
    write_run(root / "0_seed0", 0, {"ppo_costs": 1.30, "lp_previous": 1.02}, name="eval_b4_b4-real.json",
              topology="b4")
    return root


def test_runs_differing_only_in_seed_are_pooled_with_hand_computed_scores(sweep):
    groups = summarize([RunTable.read(p) for p in table_files([sweep])])
    assert len(groups) == 3  # the three seeds; the longer run; the other network
    seeds = next(g for g in groups if len(g.tables) == 3)
    assert [t.seed for t in seeds.tables] == [0, 1, 2]
    ppo = seeds.policies["ppo_costs"].to_dict()
    assert ppo["median"] == pytest.approx([1.05, 1.07, 1.06])
    assert ppo["median_mean"] == pytest.approx(1.06) and ppo["median_std"] == pytest.approx(0.01)
    assert ppo["p90_mean"] == pytest.approx(1.16) and ppo["max_worst"] == pytest.approx(1.37)
    assert ppo["below_reference"] == 2  # 1.05 and 1.06 below 1.062, 1.07 not
    assert seeds.policies["lp_previous"].below_reference is None  # the reference itself
    assert seeds.policies["ecmp"].runs == (0, 1) and seeds.policies["ecmp"].below_reference == 0
    longer = next(g for g in groups if g.tables[0].path.parent.name == "longer")
    assert longer.distinct == {"agent.total_timesteps": "1200000"}  # what sets it apart, in its title
    assert seeds.distinct == {"agent.total_timesteps": "600000"}
    elsewhere = next(g for g in groups if g.tables[0].topology == "b4")
    assert elsewhere.policies["ppo_costs"].below_reference == 0


def test_another_eval_every_is_not_pooled(tmp_path):
    write_run(tmp_path / "a", 0, {"ppo_costs": 1.05, "lp_previous": 1.06})
    write_run(tmp_path / "b", 1, {"ppo_costs": 1.05, "lp_previous": 1.06}, every=6)
    assert len(summarize([RunTable.read(p) for p in table_files([tmp_path])])) == 2


def test_summary_command_prints_and_writes_json(sweep, tmp_path):
    out = tmp_path / "summary.json"
    result = runner.invoke(app, ["summary", str(sweep), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # titles wrap
    assert "3 runs (seeds 0, 1, 2)" in printed and "2 of 3" in printed
    assert "agent.total_timesteps=1200000" in printed
    written = json.loads(out.read_text())
    assert len(written["groups"]) == 3 and written["groups"][0]["reference"] == "lp_previous"
    one = runner.invoke(app, ["summary", str(sweep / "1_seed1" / "eval.json"), "--reference", "ecmp"],
                        env={"COLUMNS": "200"})
    assert one.exit_code == 0 and "1 run (seed 1)" in " ".join(one.output.split()), one.output


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nowhere", "does not exist"),
    (lambda root: root, "no run tables under"),
    (lambda root: (root / "bad.json").write_text("{not json") and root / "bad.json", "is not a readable table"),
    (lambda root: (root / "other.json").write_text('{"agent": "x"}') and root / "other.json",
     "is not an rlte eval table: it lacks topology, traffic, backend, seed, tm_index, policies"),
])
def test_bad_input_is_one_clear_error(tmp_path, make, message):
    result = runner.invoke(app, ["summary", str(make(tmp_path))])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_unknown_reference_names_the_policies_there_are(sweep, tmp_path):
    result = runner.invoke(app, ["summary", str(sweep), "--reference", "lp_magic"])
    assert result.exit_code == 2, result.output
    assert "no table scores the reference policy 'lp_magic'; its tables score ecmp, lp_previous, ppo_costs" \
        in result.output
    result = runner.invoke(app, ["summary", str(sweep), "--out", str(tmp_path / "no" / "dir.json")])
    assert result.exit_code == 2 and "does not exist" in result.output
