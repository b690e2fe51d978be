"""Export a twin-trained split-routing policy as a bundle (:mod:`agents.bundle`) the live
controller runs with onnxruntime.

:func:`export_bundle` asks the run's kind (:meth:`experiments.learners.Learner.export_module`)
for a torch module from the pair-demand history (1, H, P) to split ratios (1, P, K), with
everything the policy does in between inside it, and traces it to ONNX (opset 17, torch's
TorchScript exporter). The export checks itself: the graph, run by onnxruntime as the
controller runs it, must give the trained policy's ``route`` on every held-out window of the
run within :data:`PARITY_TOLERANCE`, or nothing is written. The bundle is built in a
temporary directory beside ``out_dir`` and renamed into place.

:class:`DenseLinkGNN` is :class:`agents.gnn.LinkGNN` with its :class:`~agents.gnn.LinkGraph`
folded in: the sparse incidence products and the link graph's index arithmetic (``bincount``,
``index_add_``, which ONNX lacks) become dense constant matrices, small for the networks a
bundle is made for (E × P·K floats).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from envs.graph import equal_split_utilization_matrix, link_graph_edges
from topologies import PathSet, TrafficEnvelope, TrafficError, pathset_to_dict

from agents.bundle import (FORMAT_VERSION, INPUT_NAME, MANIFEST_FILE, ONNX_FILE, OUTPUT_NAME, BundleError, HeldOutScores,
                     Lineage, Manifest, TensorSpec, check_ratios, inference_session, load_bundle)
from agents.drift import DriftDetector
from agents.evaluation import history_for
from agents.gnn import LinkGNN, LinkMessagePassing

if TYPE_CHECKING:
    from experiments.api import Run

PARITY_TOLERANCE = 1e-5  # largest |ONNX - policy.route| over the held-out windows an export accepts
DENSE_LIMIT = 25_000_000  # links × path slots of DenseLinkGNN's incidence (100 MB of float32 in the graph)
OPSET = 17
PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "rlte")


class ExportError(ValueError):
    """A run that cannot be exported, or an export that failed its own check; the message says why."""


def _constant(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.array(array), dtype=dtype)


class DenseLinkGraph(nn.Module):
    """One path set's structure as dense constants for exportable modules (the link × slot
    incidence, the equal split's pair -> link utilization, capacities, the slot mask), and
    message passing over its link graph without the index arithmetic ONNX lacks."""

    def __init__(self, pathset: PathSet) -> None:
        super().__init__()
        topology = pathset.topology
        if topology.num_links * pathset.num_slots > DENSE_LIMIT:
            raise ExportError(f"{topology.name!r} is too large for a dense export ({topology.num_links} links × "
                              f"{pathset.num_slots} path slots > {DENSE_LIMIT:,} constants)")
        self.num_pairs, self.k = pathset.num_pairs, pathset.k
        capacities = np.array(topology.capacities, dtype=np.float64)
        edges = link_graph_edges(topology)
        links = topology.num_links
        adjacency = np.zeros((links, links))  # adjacency[a, b]: edges a -> b (link a feeds link b)
        np.add.at(adjacency, (edges[0], edges[1]), 1.0)
        self.register_buffer("equal_utilization", _constant(equal_split_utilization_matrix(pathset).toarray()))
        self.register_buffer("incidence", _constant(pathset.incidence.toarray()))  # (E, P·K); the above (P, E)
        self.register_buffer("mask", torch.as_tensor(np.array(pathset.mask)))
        self.register_buffer("capacities", _constant(capacities))
        self.register_buffer("capacity_share", _constant(capacities / capacities.max()))
        self.register_buffer("ahead", _constant(adjacency))      # a link's sum over the links it feeds
        self.register_buffer("behind", _constant(adjacency.T))   # ... over the links feeding it
        self.register_buffer("ahead_count", _constant(np.maximum(adjacency.sum(axis=1), 1.0)[:, None]))
        self.register_buffer("behind_count", _constant(np.maximum(adjacency.sum(axis=0), 1.0)[:, None]))

    def message_passing(self, module: LinkMessagePassing, features: torch.Tensor) -> torch.Tensor:
        """``module`` (agents.gnn.LinkMessagePassing) on this link graph: (B, E, F) -> (B, E, hidden)."""
        h = torch.relu(module.encode(features))
        for layer, norm in zip(module.layers, module.norms):
            ahead, behind = (self.ahead @ h) / self.ahead_count, (self.behind @ h) / self.behind_count
            h = norm(h + torch.relu(layer(torch.cat([h, ahead, behind], dim=-1))))
        return h


class DenseLinkGNN(DenseLinkGraph):
    """A trained :class:`LinkGNN` on one path set, as an exportable module: (B, H, P) pair
    demands -> (B, P, K) split ratios, the same computation as ``LinkGNN.forward(LinkGraph(pathset), ·)``
    with its weights (shared, not copied) and the path set's structure as dense constants."""

    def __init__(self, net: LinkGNN, pathset: PathSet) -> None:
        super().__init__(pathset)
        self.net, self.history = net, net.history

    def ratios(self, link_cost: torch.Tensor) -> torch.Tensor:
        """(B, E) link costs -> (B, P, K): softmin over each pair's path costs (LinkGNN.ratios)."""
        path_cost = link_cost @ self.incidence
        logits = -self.net.log_sharpness.exp() * path_cost.view(-1, self.num_pairs, self.k)
        return torch.softmax(logits.masked_fill(~self.mask, float("-inf")), dim=-1)

    def forward(self, demands: torch.Tensor) -> torch.Tensor:
        net = self.net
        batch, history, pairs = demands.shape
        tiny = torch.finfo(demands.dtype).tiny
        equal = (demands.reshape(batch * history, pairs) @ self.equal_utilization).reshape(batch, history, -1)
        peak = equal.flatten(1).amax(dim=1).clamp_min(tiny)
        share = self.capacity_share.expand(batch, 1, -1)
        features = torch.cat([equal / peak[:, None, None], share], dim=1).transpose(1, 2)   # (B, E, H + 1)
        h = self.message_passing(net.body, features)
        link_cost = nn.functional.softplus(net.cost(h)).squeeze(-1)
        if net.rounds:
            refinement = net.refinement
            latest = demands[:, -1]
            equal_peak = equal[:, -1].amax(dim=1, keepdim=True).clamp_min(tiny)
            for _ in range(refinement.rounds):  # agents.gnn.CostRefinement, its move LinkGNN's
                flows = (latest[:, :, None] * self.ratios(link_cost)).reshape(batch, -1)
                utilization = (flows @ self.incidence.T) / self.capacities
                own_peak = utilization.amax(dim=1, keepdim=True).clamp_min(tiny)
                state = torch.cat([features, (utilization / equal_peak)[..., None],
                                   (utilization / own_peak)[..., None], link_cost[..., None], h], dim=-1)
                h = self.message_passing(refinement.net, state)
                step = torch.tanh(refinement.step(h).squeeze(-1))
                link_cost = link_cost * torch.exp(step - step.mean(dim=1, keepdim=True))
        return self.ratios(link_cost)


def onnx_bytes(module: nn.Module, history: int, num_pairs: int) -> bytes:
    """``module`` traced to an ONNX graph with a (1, history, num_pairs) float32 input."""
    module.eval()
    example = torch.ones(1, history, num_pairs, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True)
    return buffer.getvalue()


SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the checkout rlte runs from (site-packages when installed)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=10,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def lineage(run: Run) -> Lineage:
    from omegaconf import OmegaConf

    matrices = np.ascontiguousarray(run.data.train.matrices, dtype=np.float64)
    top = _git("rev-parse", "--show-toplevel")  # rlte's own checkout, not a repository around an installed copy
    commit = _git("rev-parse", "HEAD") if top and Path(top).resolve() == SOURCE_ROOT else None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return Lineage(git_commit=commit or None, git_dirty=None if status is None else bool(status),
                   packages={name: _version(name) for name in PACKAGES},
                   training_matrices_sha256=hashlib.sha256(matrices.tobytes()).hexdigest(),
                   training_matrices=len(matrices), config=OmegaConf.to_container(run.config, resolve=True))


def run_envelope(run_dir: Path) -> TrafficEnvelope:
    """The training traffic's envelope ``rlte train`` stored in the run (it is not fitted again here)."""
    from experiments.train import ENVELOPE_FILE

    path = run_dir / ENVELOPE_FILE
    if not path.exists():
        why = ""
        try:
            why = json.loads((run_dir / "eval.json").read_text()).get("guard", {}).get("skipped", "")
        except (OSError, ValueError, AttributeError):
            pass
        raise ExportError(f"run {run_dir} has no {ENVELOPE_FILE}: a bundle carries the traffic envelope fitted at "
                          f"training time, and export does not fit one afterwards; retrain with eval.guard=true"
                          + (f" ({why})" if why else ""))
    try:
        return TrafficEnvelope.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, TrafficError) as exc:
        raise ExportError(f"{path} is not a traffic envelope written by rlte ({exc})") from None


def run_drift(run: Run, envelope: TrafficEnvelope) -> DriftDetector | None:
    """The KS / JS drift statistics ``rlte train`` stored beside the envelope; a run trained
    before rlte stored them gets them fitted here from the run's own training matrices (the
    lineage's hash names those), as training would have. None: too little training traffic."""
    from experiments.data import fit_drift_detector
    from experiments.train import DRIFT_FILE

    path = run.directory / DRIFT_FILE
    if not path.exists():
        detector = fit_drift_detector(dataclasses.replace(run.data, envelope=envelope), run.config.eval.guard_blocks)
        return None if detector is None else dataclasses.replace(detector, envelope=None)
    try:
        detector = DriftDetector.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, TrafficError) as exc:
        raise ExportError(f"{path} is not drift statistics written by rlte ({exc})") from None
    if detector.num_nodes != envelope.num_nodes:
        raise ExportError(f"{path} covers {detector.num_nodes} nodes, the run's envelope {envelope.num_nodes}")
    return dataclasses.replace(detector, envelope=None)  # the manifest carries the envelope once


def held_out_scores(run: Run) -> HeldOutScores:
    """The policy's normalized MLU on the run's held-out matrices, from its ``eval.json`` (the twin's)."""
    path = run.directory / "eval.json"
    try:
        report = json.loads(path.read_text())
        row = report["policies"][run.config.agent.name]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path}: no held-out scores of {run.config.agent.name!r} ({type(exc).__name__}: {exc}); "
                          f"rlte eval run={run.directory} writes them") from None
    if report.get("topology") != run.data.topology.name:
        raise ExportError(f"{path} scores topology {report.get('topology')!r}, not the run's "
                          f"{run.data.topology.name!r}")
    normalized = row.get("twin_normalized_mlu") or row["normalized_mlu"]  # measured live: the twin's beside it
    normalized = np.asarray(normalized, dtype=np.float64)
    return HeldOutScores(traffic=str(report.get("traffic", run.data.test.name)), matrices=len(normalized),
                         median=float(np.median(normalized)), p90=float(np.percentile(normalized, 90)),
                         max=float(normalized.max()))


def _check_run(run: Run) -> None:
    from experiments.hydra_app import read_run_config
    from experiments.progress import unfinished

    if (why := unfinished(run.directory)) is not None:
        raise ExportError(f"{why}: export a finished run (rlte train resume={run.directory} finishes it)")
    trained = read_run_config(run.directory)
    if run.config.topology != trained.topology or run.config.traffic != trained.traffic \
            or run.config.paths != trained.paths:
        raise ExportError(f"run {run.directory} was loaded for another topology, traffic or path count than it "
                          f"trained on; export it as trained")


def _parity(run: Run, policy, session, mask: np.ndarray) -> tuple[float, int]:
    """Largest |graph - policy.route| over every scored held-out window, and how many windows."""
    test, pathset = run.data.test, run.data.pathset
    worst, windows = 0.0, test.indices(1)
    for t in windows:
        history = history_for(policy, test.matrices, int(t))
        demands = pathset.demands(history[-policy.history:]).astype(np.float32)[None]
        (graph,) = session.run([OUTPUT_NAME], {INPUT_NAME: demands})
        graph = np.asarray(graph, dtype=np.float64)[0]
        try:
            check_ratios(graph, mask)
        except BundleError as exc:
            raise ExportError(f"the exported graph's answer on held-out matrix {t} is not a routing: {exc}") from None
        worst = max(worst, float(np.abs(graph - policy.route(history)).max()))
    return worst, len(windows)


def _replace_directory(built: Path, out_dir: Path) -> None:
    """Move the complete bundle ``built`` to ``out_dir``, replacing an earlier bundle there."""
    if not out_dir.exists():
        os.rename(built, out_dir)
        return
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old."))
    os.rename(out_dir, old / "bundle")
    try:
        os.rename(built, out_dir)
    except BaseException:
        os.rename(old / "bundle", out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def export_bundle(run: Run, out_dir: str | Path) -> Manifest:
    """Export ``run``'s policy as a bundle in directory ``out_dir`` (an earlier bundle there is
    replaced, once the new one is complete); its manifest. Refused (ExportError, nothing
    written) for a kind that cannot export, a run without its envelope or held-out scores, or
    a graph that differs from the policy by more than :data:`PARITY_TOLERANCE`."""
    from experiments.learners import learner

    out_dir = Path(out_dir)
    cfg, data = run.config, run.data
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out_dir}: directory {out_dir.parent} does not exist")
    replaceable = out_dir.is_dir() and ((out_dir / MANIFEST_FILE).is_file() or not any(out_dir.iterdir()))
    if out_dir.exists() and not replaceable:
        raise ExportError(f"{out_dir} exists and is not a policy bundle: export replaces only an earlier bundle "
                          f"(or an empty directory)")
    if run.directory is None or run.model is None:
        raise ExportError("export needs a trained run loaded from its directory (experiments.api.load_run)")
    kind = learner(cfg.agent.algorithm)
    module = kind.export_module(cfg, data, run.model)  # refuses the kinds that cannot
    _check_run(run)
    envelope, scores = run_envelope(run.directory), held_out_scores(run)
    drift = run_drift(run, envelope)
    policy = kind.export_policy(cfg, data, run.model)  # run.policy, or its like-with-like stepping (PPO)
    pathset, history = data.pathset, policy.history
    if envelope.num_nodes != data.topology.num_nodes:
        raise ExportError(f"{run.directory}'s envelope covers {envelope.num_nodes} nodes, the run's topology "
                          f"{data.topology.num_nodes}")
    model = onnx_bytes(module, history, pathset.num_pairs)
    difference, windows = _parity(run, policy, inference_session(model), np.asarray(pathset.mask))
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"the ONNX graph differs from the trained policy by up to {difference:.3g} on the "
                          f"{windows} held-out windows (tolerance {PARITY_TOLERANCE:g}); nothing written")
    manifest = Manifest(
        format_version=FORMAT_VERSION, policy=cfg.agent.name, kind=f"{cfg.agent.algorithm}/{cfg.agent.policy}",
        topology=data.topology.name, topology_fingerprint=data.topology.fingerprint(),
        network=data.topology.to_dict(), pathset=pathset_to_dict(pathset), history=history,
        input=TensorSpec(name=INPUT_NAME, shape=[1, history, pathset.num_pairs]),
        output=TensorSpec(name=OUTPUT_NAME, shape=[1, pathset.num_pairs, pathset.k]),
        envelope=envelope.to_dict(), drift=None if drift is None else drift.to_dict(), held_out=scores, lineage=lineage(run), onnx_file=ONNX_FILE,
        onnx_sha256=hashlib.sha256(model).hexdigest(), parity_max_abs_diff=difference,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    built = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        built.chmod(0o755)  # mkdtemp's is the owner's alone; a bundle is read by the controller's user too
        (built / ONNX_FILE).write_bytes(model)
        (built / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=1))
        bundle = load_bundle(built, pathset=pathset)  # what the controller will read, checked as it will be
        first = history_for(policy, data.test.matrices, int(data.test.indices(1)[0]))
        if np.abs(bundle.decide(first) - policy.route(first)).max() > PARITY_TOLERANCE:
            raise ExportError("the written bundle does not decide as the policy does")
        _replace_directory(built, out_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return manifest


__all__ = ["DenseLinkGNN", "DenseLinkGraph", "ExportError", "PARITY_TOLERANCE", "export_bundle", "onnx_bytes"]
