"""The benchmarks' results files: written whole, and kept through an interrupted run."""

from __future__ import annotations

import json
import sys

import pytest

from bench import common, learning


def test_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "result.json"
    common.write("result", {"runs": [1, 2]}, str(path))
    with pytest.raises(TypeError):
        common.write("result", {"runs": [object()]}, str(path))  # not JSON: fails before replacing
    assert json.loads(path.read_text()) == {"runs": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_an_interrupted_learning_run_keeps_the_runs_it_was_replacing(tmp_path, monkeypatch):
    path = tmp_path / "learning.json"
    before = {"benchmark": "learning", "abilene_runs": [{"agent": "ppo_costs", "seed": 0, "final": {}}],
              "decision_time": [{"old": True}], "summary": {"ppo_costs": {"median": [1.05]}}}
    path.write_text(json.dumps(before))

    def interrupted(names, seeds):
        raise KeyboardInterrupt

    monkeypatch.setattr(learning, "decision_times", lambda: [{"new": True}])
    monkeypatch.setattr(learning, "train_runs", interrupted)
    monkeypatch.setattr(sys, "argv", ["learning.py", "--agents", "ppo_costs", "--seeds", "0", "--merge",
                                      "--out", str(path)])
    with pytest.raises(KeyboardInterrupt):
        learning.main()
    after = json.loads(path.read_text())
    assert after == {**before, "decision_time": [{"new": True}]}  # the fresh timing kept, nothing lost
