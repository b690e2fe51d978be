"""An exported split-routing policy: the format the live controller runs, without torch.

A *bundle* is a directory with two files: ``policy.onnx``, a graph from the pair-demand
history (1, H, P) float32, in the topology's own units, to split ratios (1, P, K), and
``manifest.json`` (:class:`Manifest`): what the graph routes (the topology, its fingerprint
and the path set), how it was made (the run's config, the training matrices' hash, the git
commit and package versions), how well it did on held-out traffic in the twin, the traffic
envelope and drift statistics (agents.drift: KS / JS thresholds calibrated on the training
traffic) its drift guard checks, and the ONNX file's sha256. :mod:`experiments.export` writes
bundles (with torch); :func:`load_bundle` reads one and refuses anything that does not hold
together, and :meth:`Bundle.decide` routes with onnxruntime on one CPU thread.

This module needs numpy, pydantic and onnxruntime (imported on first use), never torch or
Stable-Baselines3: the controller imports it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.drift import DriftDetector
from topologies import PathSet, Topology, TopologyError, TrafficEnvelope, TrafficError, pathset_from_dict

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "policy.onnx"
INPUT_NAME = "demands"
OUTPUT_NAME = "split_ratios"
RATIO_TOLERANCE = 1e-5  # a pair's ratios over its real paths sum to 1 within this


class BundleError(ValueError):
    """A bundle that cannot be used, or a decision that cannot be trusted; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    shape: list[int]
    dtype: str = "float32"


class HeldOutScores(_Strict):
    """Normalized MLU (MLU ÷ the exact optimum) of the policy on the run's held-out matrices, in the twin."""

    traffic: str
    matrices: int
    median: float
    p90: float
    max: float


class Lineage(_Strict):
    git_commit: Optional[str]            # None: not exported from a git checkout
    git_dirty: Optional[bool]            # uncommitted changes in that checkout
    packages: dict[str, Optional[str]]   # numpy, torch, onnx, onnxruntime, rlte (None: not installed)
    training_matrices_sha256: str        # of the (T, N, N) float64 matrices the policy trained on
    training_matrices: int
    config: dict[str, Any]               # the run's resolved config


class Manifest(_Strict):
    format_version: int
    policy: str                          # the agent's name (agent.name)
    kind: str                            # agent.algorithm/agent.policy, e.g. gradient/graph
    topology: str
    topology_fingerprint: str            # Topology.fingerprint()
    network: dict[str, Any]              # Topology.to_dict(): the graph's network, exactly
    pathset: dict[str, Any]              # topologies.pathset_to_dict
    history: int = Field(ge=1)           # H: matrices each decision reads, oldest first
    input: TensorSpec                    # (1, H, P) pair demands
    output: TensorSpec                   # (1, P, K) split ratios
    envelope: dict[str, Any]             # TrafficEnvelope.to_dict() of the training traffic
    drift: Optional[dict[str, Any]] = None  # DriftDetector.to_dict() without its envelope (the one above);
    #                                         None: the training traffic was too short to calibrate KS / JS
    held_out: HeldOutScores
    lineage: Lineage
    onnx_file: str
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    parity_max_abs_diff: float = Field(ge=0)  # ONNX graph against the trained policy on the held-out windows
    created: str

    @field_validator("onnx_file")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"must be a file name inside the bundle, got {name!r}")
        return name


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def inference_session(model: bytes):
    """An onnxruntime session for a serialized graph: CPU, one thread (what decisions run on)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def check_ratios(ratios: np.ndarray, mask: np.ndarray) -> None:
    """Refuse (BundleError) split ratios that are not finite, negative, off the padded slots'
    zero, or whose rows do not sum to 1 over each pair's real paths."""
    if ratios.shape != mask.shape:
        raise BundleError(f"the policy gave ratios of shape {ratios.shape}, expected {mask.shape}")
    if not np.isfinite(ratios).all():
        raise BundleError("the policy gave non-finite split ratios")
    if (ratios < 0).any():
        raise BundleError(f"the policy gave negative split ratios (down to {ratios.min():.3g})")
    if (ratios[~mask] != 0).any():
        raise BundleError("the policy put traffic on padded path slots (pairs with fewer than K paths)")
    sums = np.where(mask, ratios, 0.0).sum(axis=1)
    if (np.abs(sums - 1.0) > RATIO_TOLERANCE).any():
        pair = int(np.argmax(np.abs(sums - 1.0)))
        raise BundleError(f"the policy's ratios of pair {pair} sum to {sums[pair]:.6g}, not 1 "
                          f"(tolerance {RATIO_TOLERANCE:g})")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded bundle: its manifest, network, path set, envelope and the ONNX session."""

    path: Path
    manifest: Manifest
    topology: Topology
    pathset: PathSet
    envelope: TrafficEnvelope
    drift: DriftDetector | None  # KS / JS (and the envelope) on measured traffic; None: envelope alone
    session: Any  # onnxruntime.InferenceSession

    @property
    def history(self) -> int:
        return self.manifest.history

    def demands(self, history: np.ndarray) -> np.ndarray:
        """(h >= H, N, N) traffic matrices, oldest first -> the graph's (1, H, P) float32 input."""
        history = np.asarray(history)
        n = self.topology.num_nodes
        if history.ndim != 3 or history.shape[1:] != (n, n):
            raise BundleError(f"a decision needs (H, {n}, {n}) traffic matrices for {self.topology.name!r}, "
                              f"got shape {history.shape}")
        if len(history) < self.history:
            raise BundleError(f"the policy reads the last {self.history} matrices, got {len(history)}")
        demands = self.pathset.demands(history[-self.history:])
        if not (np.isfinite(demands).all() and (demands >= 0).all()):
            raise BundleError("traffic matrices must be finite and non-negative")
        return demands.astype(np.float32)[None]

    def run(self, demands: np.ndarray) -> np.ndarray:
        """The graph on a (1, H, P) float32 input: checked (P, K) float64 split ratios."""
        (ratios,) = self.session.run([self.manifest.output.name], {self.manifest.input.name: demands})
        ratios = np.asarray(ratios, dtype=np.float64)
        if ratios.shape != tuple(self.manifest.output.shape):
            raise BundleError(f"the graph gave an output of shape {ratios.shape}, not {self.manifest.output.shape}")
        ratios = ratios[0]
        check_ratios(ratios, np.asarray(self.pathset.mask))
        return ratios

    def decide(self, history: np.ndarray) -> np.ndarray:
        """(H, N, N) traffic matrices, oldest first (more: the last H) -> (P, K) split ratios for
        the next matrix; a BundleError when the input or the graph's answer is not usable."""
        return self.run(self.demands(history))


def read_manifest(path: Path) -> Manifest:
    """``path``'s manifest, checked against the schema (BundleError naming what is wrong)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read the manifest ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not JSON (truncated or damaged? {exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: not a bundle manifest (a JSON {type(data).__name__}, not an object)")
    version = data.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BundleError(f"{path}: unknown format_version {version!r}; this rlte reads bundles of format "
                          f"{FORMAT_VERSION}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()[:5])
        raise BundleError(f"{path}: the manifest does not match the bundle schema ({problems})") from None


def _check_tensor(onnx_path: Path, what: str, arg, spec: TensorSpec) -> None:
    if arg.name != spec.name or list(arg.shape) != spec.shape or arg.type != "tensor(float)":
        raise BundleError(f"{onnx_path}: the ONNX graph's {what} is {arg.name!r} {arg.type} of shape "
                          f"{list(arg.shape)}; the manifest says {spec.name!r} {spec.dtype} of shape {spec.shape}")


def load_bundle(path: str | Path, *, topology: Topology | None = None, pathset: PathSet | None = None) -> Bundle:
    """The bundle in directory ``path``, or a BundleError saying what is wrong with it (nothing
    is written). ``topology``, ``pathset``: the network and paths it must route (the
    controller's); a bundle made for others is refused."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path} is not a directory (a bundle is a directory with {MANIFEST_FILE} and the "
                          f"ONNX graph)")
    if not (path / MANIFEST_FILE).is_file():
        raise BundleError(f"{path} is not a policy bundle: it has no {MANIFEST_FILE}")
    manifest = read_manifest(path / MANIFEST_FILE)
    try:
        network = Topology.from_dict(manifest.network)
    except (TopologyError, TypeError, KeyError, ValueError) as exc:
        raise BundleError(f"{path}: the manifest's network is not a topology description ({exc})") from None
    if network.fingerprint() != manifest.topology_fingerprint:
        raise BundleError(f"{path}: the manifest's network does not have its topology_fingerprint (damaged manifest)")
    if topology is not None and topology.fingerprint() != manifest.topology_fingerprint:
        raise BundleError(f"{path}: the bundle routes topology {manifest.topology!r} (fingerprint "
                          f"{manifest.topology_fingerprint[:12]}), not {topology.name!r} (fingerprint "
                          f"{topology.fingerprint()[:12]})")
    try:
        paths = pathset_from_dict(network, manifest.pathset)
        envelope = TrafficEnvelope.from_dict(manifest.envelope)
        # the manifest keeps one envelope; the detector scores it beside KS and JS
        drift = None if manifest.drift is None else DriftDetector.from_dict({**manifest.drift,
                                                                             "envelope": manifest.envelope})
    except (TopologyError, TrafficError, TypeError, KeyError, ValueError) as exc:
        raise BundleError(f"{path}: the manifest's path set, envelope or drift statistics are not usable "
                          f"({exc})") from None
    if pathset is not None:
        if pathset.topology.fingerprint() != manifest.topology_fingerprint:
            raise BundleError(f"{path}: the bundle routes topology {manifest.topology!r}, and the path set given "
                              f"is for {pathset.topology.name!r} (another fingerprint)")
        if not paths.same_paths(pathset):
            raise BundleError(f"{path}: the bundle was made for another path set on {manifest.topology!r} "
                              f"({paths.num_pairs} pairs, K={paths.k}; the one given: {pathset.num_pairs} pairs, "
                              f"K={pathset.k}, or other paths)")
    if envelope.num_nodes != network.num_nodes:
        raise BundleError(f"{path}: the manifest's envelope covers {envelope.num_nodes} nodes, the network "
                          f"{network.num_nodes}")
    if drift is not None and drift.num_nodes != network.num_nodes:
        raise BundleError(f"{path}: the manifest's drift statistics cover {drift.num_nodes} nodes, the network "
                          f"{network.num_nodes}")
    expected_in, expected_out = [1, manifest.history, paths.num_pairs], [1, paths.num_pairs, paths.k]
    if manifest.input.shape != expected_in or manifest.output.shape != expected_out:
        raise BundleError(f"{path}: the manifest's input/output shapes {manifest.input.shape}/"
                          f"{manifest.output.shape} do not fit its path set and history ({expected_in}/"
                          f"{expected_out})")
    onnx_path = path / manifest.onnx_file
    try:
        model = onnx_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the ONNX graph {manifest.onnx_file} ({exc})") from None
    digest = hashlib.sha256(model).hexdigest()
    if digest != manifest.onnx_sha256:
        raise BundleError(f"{onnx_path}: sha256 {digest[:12]}… does not match the manifest's "
                          f"{manifest.onnx_sha256[:12]}… (damaged or replaced)")
    try:
        session = inference_session(model)
    except ImportError:
        raise
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise BundleError(f"{onnx_path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise BundleError(f"{onnx_path}: the graph has {len(inputs)} inputs and {len(outputs)} outputs, not one each")
    _check_tensor(onnx_path, "input", inputs[0], manifest.input)
    _check_tensor(onnx_path, "output", outputs[0], manifest.output)
    return Bundle(path, manifest, network, paths, envelope, drift, session)


__all__ = ["FORMAT_VERSION", "INPUT_NAME", "MANIFEST_FILE", "ONNX_FILE", "OUTPUT_NAME", "Bundle", "BundleError",
           "HeldOutScores", "Lineage", "Manifest", "TensorSpec", "check_ratios", "inference_session",
           "load_bundle", "read_manifest", "sha256_file"]
