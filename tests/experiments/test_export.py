"""Exporting a twin-trained split-routing policy as a bundle (experiments.export) and reading it
back without torch (agents.bundle): the bundle decides as the trained policy routes, its
manifest says what it routes and how it was made, every damaged or mismatched bundle is
refused, the kinds that cannot export say why, and `rlte policy export` writes one."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.bundle import FORMAT_VERSION, BundleError, check_ratios, load_bundle
from agents.drift import DriftDetector
from agents.evaluation import history_for
from experiments import compose, load_run, train_config
from topologies import PathSet, TrafficEnvelope, k_shortest_paths, load_topology

from tests.support import ROOT

TINY = ("topology=b4", "traffic=b4-real", "eval.every=3", "eval.periodic_every=1000", "eval.with_baselines=false")
MLP = ("agent=gradient", "agent.epochs=2", "agent.hidden=[16]", *TINY)
GNN = ("agent=gradient_gnn", "agent.epochs=1", "agent.hidden=8", "agent.layers=1", "agent.rounds=2", *TINY)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two gradient policies (MLP and graph network), trained tiny, each exported once."""
    from experiments.export import export_bundle

    root = tmp_path_factory.mktemp("export")
    trained = {}
    for name, overrides in (("mlp", MLP), ("graph", GNN)):
        run = train_config(compose(*overrides), root / f"run_{name}")
        manifest = export_bundle(run, root / f"bundle_{name}")
        trained[name] = (run, root / f"bundle_{name}", manifest)
    return trained


def held_out_windows(run):
    policy = run.policy
    test = run.data.test
    return policy, [history_for(policy, test.matrices, int(t)) for t in test.indices(1)]


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def rewrite_manifest(bundle: Path, **changes) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def refused(bundle: Path, message: str, **options) -> None:
    """load_bundle refuses ``bundle`` naming the problem, and leaves its files as they were."""
    before = files_of(bundle) if bundle.is_dir() else None
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle, **options)
    if before is not None:
        assert files_of(bundle) == before


@pytest.mark.parametrize("kind", ["mlp", "graph"])
def test_the_bundle_decides_as_the_trained_policy_routes(runs, kind):
    run, bundle_dir, manifest = runs[kind]
    bundle = load_bundle(bundle_dir, topology=run.data.topology, pathset=run.data.pathset)
    policy, windows = held_out_windows(run)
    assert len(windows) == len(run.data.test.indices(1)) > 10
    worst = 0.0
    for history in windows:
        ratios = bundle.decide(history)
        assert ratios.shape == (run.data.pathset.num_pairs, run.data.pathset.k)
        worst = max(worst, float(np.abs(ratios - policy.route(history)).max()))
    assert worst <= 1e-5
    assert manifest.parity_max_abs_diff <= 1e-5
    # more history than H: the last H matrices decide; fewer, or another network's shape, is refused
    longer = run.data.test.matrices[: int(run.data.test.indices(1)[-1])]
    np.testing.assert_array_equal(bundle.decide(longer), bundle.decide(longer[-bundle.history:]))
    with pytest.raises(BundleError, match="reads the last 3 matrices"):
        bundle.decide(longer[-2:])
    with pytest.raises(BundleError, match="traffic matrices for 'b4'"):
        bundle.decide(np.ones((3, 5, 5)))
    with pytest.raises(BundleError, match="finite and non-negative"):
        bundle.decide(-longer[-3:])


def test_the_manifest_says_what_the_graph_routes_and_how_it_was_made(runs):
    import torch
    from omegaconf import OmegaConf

    for kind, (run, bundle_dir, manifest) in runs.items():
        data, cfg = run.data, run.config
        on_disk = json.loads((bundle_dir / "manifest.json").read_text())
        assert on_disk["format_version"] == FORMAT_VERSION == manifest.format_version
        assert manifest.kind == f"gradient/{kind}" and manifest.policy == cfg.agent.name
        assert manifest.topology == "b4" and manifest.topology_fingerprint == load_topology("b4").fingerprint()
        assert manifest.history == cfg.env.history == 3
        pairs, k = data.pathset.num_pairs, data.pathset.k
        assert manifest.input.shape == [1, 3, pairs] and manifest.output.shape == [1, pairs, k]
        assert manifest.onnx_sha256 == hashlib.sha256((bundle_dir / manifest.onnx_file).read_bytes()).hexdigest()
        assert 0 <= manifest.parity_max_abs_diff <= 1e-5
        # held-out scores: the run's own table's (scored by experiments.scoring, not by the export)
        summary = json.loads((run.directory / "eval.json").read_text())["policies"][cfg.agent.name]["summary"]
        scores = manifest.held_out
        assert (scores.median, scores.p90, scores.max) == pytest.approx(
            (summary["median"], summary["p90"], summary["max"]), rel=1e-12)
        # the envelope: the drift guard's, fitted on the training traffic at training time
        fitted = TrafficEnvelope.fit(data.train, window=cfg.env.history, blocks=cfg.eval.guard_blocks)
        np.testing.assert_allclose(manifest.envelope["top_share"], fitted.top_share, rtol=0, atol=0)
        assert manifest.envelope["threshold"] == fitted.threshold
        assert json.loads((run.directory / "envelope.json").read_text()) == manifest.envelope
        # KS / JS drift statistics: fitted on the same training traffic at training time (windows of 3: 7
        # blocks of 6 do not fit in b4-real's 24 matrices), carried without a second copy of the envelope
        stored = json.loads((run.directory / "drift.json").read_text())
        assert manifest.drift["envelope"] is None and stored["envelope"] == manifest.envelope
        assert {key: value for key, value in stored.items() if key != "envelope"} == \
            {key: value for key, value in manifest.drift.items() if key != "envelope"}
        refit = DriftDetector.fit(data.train, window=3, blocks=cfg.eval.guard_blocks)
        assert (manifest.drift["ks_threshold"], manifest.drift["js_threshold"]) == (refit.ks_threshold,
                                                                                  refit.js_threshold)
        detector = load_bundle(bundle_dir).drift
        assert detector.window == 3 and detector.thresholds["envelope"] == manifest.envelope["threshold"]
        lineage = manifest.lineage
        matrices = np.ascontiguousarray(data.train.matrices, dtype=np.float64)
        assert lineage.training_matrices_sha256 == hashlib.sha256(matrices.tobytes()).hexdigest()
        assert lineage.training_matrices == len(data.train)
        assert lineage.config == OmegaConf.to_container(cfg, resolve=True)
        assert lineage.packages["torch"] == torch.__version__ and lineage.packages["onnxruntime"]
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        assert lineage.git_commit == (head.stdout.strip() if head.returncode == 0 else None)
        # the path set and network it routes, as the controller will rebuild them
        assert load_bundle(bundle_dir).pathset.same_paths(data.pathset)


def test_a_bundle_for_another_network_or_path_set_is_refused(runs):
    _, bundle, _ = runs["graph"]
    refused(bundle, "routes topology 'b4'.*not 'abilene'", topology=load_topology("abilene"))
    refused(bundle, "another path set", pathset=k_shortest_paths(load_topology("b4"), 3))
    b4 = k_shortest_paths(load_topology("b4"), 4)
    reordered = PathSet(b4.topology, b4.pairs, tuple(tuple(reversed(paths)) for paths in b4.paths))
    refused(bundle, "another path set", pathset=reordered)  # the same shape, other slots: still another routing
    refused(bundle, "path set given is for 'nsfnet'", pathset=k_shortest_paths(load_topology("nsfnet"), 4))


def test_a_damaged_bundle_is_refused(runs, tmp_path):
    _, original, _ = runs["mlp"]
    bundle = copy_bundle(original, tmp_path)
    onnx = bundle / "policy.onnx"
    graph = bytearray(onnx.read_bytes())
    graph[len(graph) // 2] ^= 0x01
    onnx.write_bytes(bytes(graph))
    refused(bundle, "sha256 .* does not match the manifest")
    onnx.write_bytes(b"not an onnx graph")  # the right digest, but nothing onnxruntime reads
    rewrite_manifest(bundle, onnx_sha256=hashlib.sha256(b"not an onnx graph").hexdigest())
    refused(bundle, "onnxruntime cannot load it")
    onnx.unlink()
    refused(bundle, "cannot read the ONNX graph policy.onnx")


def test_a_manifest_that_is_not_this_format_is_refused(runs, tmp_path):
    _, original, _ = runs["mlp"]
    bundle = copy_bundle(original, tmp_path)
    manifest = bundle / "manifest.json"
    text = manifest.read_text()
    rewrite_manifest(bundle, format_version=FORMAT_VERSION + 1)
    refused(bundle, f"unknown format_version {FORMAT_VERSION + 1}")
    manifest.write_text(text[: len(text) // 2])
    refused(bundle, "not JSON")
    manifest.write_text(text)
    rewrite_manifest(bundle, history="three", onnx_file="../policy.onnx")
    refused(bundle, "does not match the bundle schema.*history.*onnx_file")
    data = json.loads(text)
    del data["envelope"]
    manifest.write_text(json.dumps(data))
    refused(bundle, "envelope: Field required")
    manifest.write_text("[1, 2]")
    refused(bundle, "a JSON list, not an object")
    manifest.unlink()
    refused(bundle, "has no manifest.json")
    refused(tmp_path / "nothing here", "is not a directory")
    (tmp_path / "a file").write_text("x")
    refused(tmp_path / "a file", "is not a directory")


def test_a_graph_whose_shapes_do_not_match_the_manifest_is_refused(runs, tmp_path):
    """Another topology's graph (NSFNET's pairs, not b4's), its digest fixed up: only the shape check sees it."""
    from experiments.export import DenseLinkGNN, onnx_bytes

    run, original, _ = runs["graph"]
    bundle = copy_bundle(original, tmp_path)
    nsfnet = k_shortest_paths(load_topology("nsfnet"), 4)
    other = onnx_bytes(DenseLinkGNN(run.model, nsfnet), 3, nsfnet.num_pairs)
    (bundle / "policy.onnx").write_bytes(other)
    rewrite_manifest(bundle, onnx_sha256=hashlib.sha256(other).hexdigest())
    assert nsfnet.num_pairs != run.data.pathset.num_pairs
    refused(bundle, rf"graph's input is 'demands' tensor\(float\) of shape \[1, 3, {nsfnet.num_pairs}\]; the "
                    rf"manifest says 'demands' float32 of shape \[1, 3, {run.data.pathset.num_pairs}\]")


def test_decisions_that_are_not_a_routing_are_refused(runs, tmp_path):
    """A graph whose ratios sum to 2, or are not finite: decide raises instead of answering."""
    import torch

    from experiments.export import onnx_bytes

    run, original, _ = runs["mlp"]
    _, windows = held_out_windows(run)
    for broken, message in ((lambda r: 2 * r, "sum to 2"), (lambda r: r / 0, "non-finite"),
                            (lambda r: r - 0.5, "negative")):
        class Broken(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = run.model

            def forward(self, demands):
                return broken(self.net(demands))

        bundle = tmp_path / f"bundle_{message.split()[0]}"
        shutil.copytree(original, bundle)
        graph = onnx_bytes(Broken().eval(), 3, run.data.pathset.num_pairs)
        (bundle / "policy.onnx").write_bytes(graph)
        rewrite_manifest(bundle, onnx_sha256=hashlib.sha256(graph).hexdigest())
        with pytest.raises(BundleError, match=message):
            load_bundle(bundle).decide(windows[0])
    # b4's pairs all have K paths; a pair with fewer must leave its padded slots empty
    mask = np.array([[True, True], [True, False]])
    check_ratios(np.array([[0.5, 0.5], [1.0, 0.0]]), mask)
    with pytest.raises(BundleError, match="padded path slots"):
        check_ratios(np.array([[0.5, 0.5], [0.9, 0.1]]), mask)


def test_export_refuses_a_graph_that_differs_from_the_policy_and_writes_nothing(runs, tmp_path, monkeypatch):
    import torch

    from experiments.export import ExportError, export_bundle
    from experiments.learners.gradient import GradientLearner

    run, original, _ = runs["mlp"]
    mask = torch.as_tensor(np.array(run.data.pathset.mask))

    class Off(torch.nn.Module):  # a valid routing, 1e-3 from the policy's
        def __init__(self):
            super().__init__()
            self.net = run.model

        def forward(self, demands):
            uniform = mask / mask.sum(dim=-1, keepdim=True)
            return 0.999 * self.net(demands) + 0.001 * uniform

    monkeypatch.setattr(GradientLearner, "export_module", lambda self, cfg, data, model: Off())
    out = copy_bundle(original, tmp_path)
    before = files_of(out)
    with pytest.raises(ExportError, match="differs from the trained policy by up to 0.00"):
        export_bundle(run, out)
    assert files_of(out) == before  # the earlier bundle is kept
    with pytest.raises(ExportError, match="differs"):
        export_bundle(run, tmp_path / "new")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle"]  # no bundle, no temporary left


def test_export_replaces_only_a_bundle(runs, tmp_path):
    from experiments.export import ExportError, export_bundle

    run, _, _ = runs["mlp"]
    out = tmp_path / "out"
    export_bundle(run, out)
    (out / "stale").write_text("from an earlier bundle")
    export_bundle(run, out)  # an earlier bundle: replaced whole
    assert sorted(path.name for path in out.iterdir()) == ["manifest.json", "policy.onnx"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a policy bundle"):
        export_bundle(run, precious)
    assert files_of(precious) == {"notes.txt": b"mine"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_bundle(run, tmp_path / "no" / "bundle")


def test_damaged_drift_statistics_are_refused(runs, tmp_path):
    bundle = copy_bundle(runs["mlp"][1], tmp_path)
    drift = json.loads((bundle / "manifest.json").read_text())["drift"]
    rewrite_manifest(bundle, drift={**drift, "ks_threshold": 1.5})
    refused(bundle, "drift statistics are not usable.*ks_threshold must lie in")
    rewrite_manifest(bundle, drift={**drift, "reference": drift["reference"][::-1][:5]})
    refused(bundle, "drift statistics are not usable")


def test_a_run_without_its_envelope_is_refused(runs, tmp_path):
    """eval.guard=false trains no envelope (and removes one an earlier run left); export does not fit one."""
    from experiments.export import ExportError, export_bundle
    from experiments.train import run_training

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "envelope.json").write_text("{}")  # left by an earlier run in this directory
    run_training(compose(*MLP, "eval.guard=false"), run_dir)
    assert not (run_dir / "envelope.json").exists()
    with pytest.raises(ExportError, match="no envelope.json.*retrain with eval.guard=true"):
        export_bundle(load_run(run_dir), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_the_bundle_reads_and_decides_without_torch(runs, tmp_path):
    run, bundle, _ = runs["graph"]
    policy, windows = held_out_windows(run)
    np.save(tmp_path / "window.npy", windows[-1])
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['stable_baselines3'] = None\n"
        "import numpy as np\n"
        "from agents.bundle import load_bundle\n"
        f"bundle = load_bundle({str(bundle)!r})\n"
        f"np.save({str(tmp_path / 'ratios.npy')!r}, bundle.decide(np.load({str(tmp_path / 'window.npy')!r})))\n"
        "assert sys.modules['torch'] is None\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "ratios.npy"), policy.route(windows[-1]), rtol=0, atol=1e-5)


def test_rlte_policy_export(runs, tmp_path):
    from experiments.cli import app

    runner = CliRunner()
    run, _, _ = runs["graph"]
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["policy", "export", f"run={run.directory}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    size = (out / "policy.onnx").stat().st_size
    assert f"bundle {out}: policy gradient_gnn (gradient/graph) for b4, H=3, parity max |diff|" in line
    assert f"policy.onnx {size / 1024:.1f} KiB" in line
    assert load_bundle(out).manifest.parity_max_abs_diff <= 1e-5
    again = runner.invoke(app, ["policy", "export", "--run", str(run.directory), "--out", str(out)])
    assert again.exit_code == 0, again.output
    for args, message in (([str(tmp_path / "missing")], "run directory .* does not exist"),
                          ([str(tmp_path)], "config.yaml"),
                          ([str(run.directory), "--run", str(run.directory)], "name the run once"),
                          ([], "say which run to export")):
        bad = runner.invoke(app, ["policy", "export", *args, "--out", str(tmp_path / "other")])
        assert bad.exit_code == 2, bad.output
        assert re.search(f"error: .*{message}", " ".join(bad.output.split())), bad.output
        assert "Traceback" not in bad.output
    assert not (tmp_path / "other").exists()
