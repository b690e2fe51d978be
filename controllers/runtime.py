"""The policy runtime: an exported policy (agents.bundle) deciding inside the controller.

Every decision interval the runtime turns the controller's own measurements into a traffic
matrix (per-pair rates ÷ ``capacity_scale``: the model's units, what the bundle was trained
on), keeps the last H as the history, and asks the bundle for split ratios in a worker
thread with a deadline: a slow or stuck inference delays only its own decision, never the
API, telemetry or failover. Then:

* mode ``shadow``: it records what it would do, and the predicted MLU of its decision, of the
  installed routing and of the fallback on the measured matrix; the installed routing stays;
* mode ``active``: it installs its decision through the controller's install path (the
  routing lock, taken with a deadline, then the barriers), as the HTTP API does.

It falls back to classic control (``fallback``: by default the min-MLU path LP on the last
measured matrix, shortest path if the LP fails) in the same interval when inference fails, times out or returns
invalid ratios, when the measured traffic drifts from the training traffic (the bundle's
:class:`agents.drift.DriftDetector`: KS on per-pair shares, JS over pairs and the envelope
score, each against its threshold calibrated on the training traffic, in consecutive
windows), or when the policy's predicted MLU is worse than the fallback's by ``mlu_margin``
for ``hurt_intervals`` intervals in a row; it returns once every cause has been gone for
``recover_intervals`` intervals. Promotion from shadow to active is an explicit command, or
the operator's rule ``promote_after`` = (N, M): the policy's predicted MLU below the
incumbent's on N of the last M shadow decisions, none of them in fallback. A promotion or a
rollback in active mode installs at once. Each decision record also carries the MLU the
controller measured over the polling interval before it (``measured_mlu``): the outcome of
the routing installed then.

Every bundle deployed is copied into the state directory under its version (the first 12
hex digits of its ONNX sha256); ``current.json`` (written atomically) names the version and
mode a restart resumes, and the deployment history rollback walks back. ``decisions.jsonl``
is the append-only audit log: one JSON line per decision and per mode/deploy/rollback event.

Nothing here imports torch, Stable-Baselines3 or os-ken: the app hands over an install
function; tests hand over a fake one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.bundle import MANIFEST_FILE, BundleError, check_ratios, load_bundle
from agents.drift import STATISTICS, DriftDetector
from topologies import TrafficEnvelope

from .decision import DECISIONS, FirstPath, make_decision
from .state import ControllerState, RequestError, json_safe

LOG = logging.getLogger("rlte.controller.policy")

Mode = Literal["shadow", "active"]
MODES: tuple[str, ...] = ("shadow", "active")
CURRENT_FILE = "current.json"
AUDIT_FILE = "decisions.jsonl"
BUNDLES_DIR = "bundles"
VERSION_LENGTH = 12


class PolicyBundle(Protocol):
    """What the runtime needs of a bundle (agents.bundle.Bundle, or a test's stand-in)."""

    history: int
    envelope: TrafficEnvelope
    drift: DriftDetector | None

    def decide(self, history: np.ndarray) -> np.ndarray: ...


# (ratios, source, pairs whose groups change; None: all) -> install report; raises RequestError
Installer = Callable[[np.ndarray, str, "list[int] | None"], dict]


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision_interval_s: float = Field(3.0, gt=0)
    decision_timeout_s: float = Field(1.0, gt=0)
    mlu_margin: float = Field(0.05, ge=0, description="the policy hurts when its MLU > fallback's × (1 + margin)")
    hurt_intervals: int = Field(3, ge=1, description="... for this many intervals in a row")
    recover_intervals: int = Field(3, ge=1, description="fallback ends once every cause is gone this long")
    fallback: str = Field("lp", description="classic routing to fall back to: lp (on the last measured matrix, "
                                            "shortest path if it fails) or a controllers.decision routing")
    lp_time_limit_s: float = Field(1.0, gt=0)
    reinstall_tolerance: float = Field(
        0.02, ge=0, le=1, description="a pair's group is rewritten only when one of its ratios moved more than this: "
                                      "every group change disturbs the counters the next decision reads")
    drift_statistics: tuple[str, ...] = Field(
        STATISTICS, description="the drift statistics that make the runtime fall back (all are recorded): "
                                "ks, js, envelope")
    promote_after: Optional[tuple[int, int]] = Field(
        None, description="(N, M): promote shadow -> active once the policy's predicted MLU beat the incumbent's "
                          "on N of the last M decisions (none in fallback); None: only an explicit command promotes")
    keep_decisions: int = Field(500, ge=1, description="audit records kept in memory for the API")

    @field_validator("fallback")
    @classmethod
    def _known_fallback(cls, value: str) -> str:
        if value != "lp" and value not in DECISIONS:
            raise ValueError(f"unknown fallback routing {value!r}; choose lp, {', '.join(DECISIONS)}")
        return value

    @field_validator("drift_statistics")
    @classmethod
    def _known_statistics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in STATISTICS]
        if unknown or not value:
            raise ValueError(f"unknown drift statistic(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(STATISTICS)}")
        return tuple(dict.fromkeys(value))

    @field_validator("promote_after")
    @classmethod
    def _n_of_m(cls, value: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
        if value is not None and not 1 <= value[0] <= value[1]:
            raise ValueError(f"promotion needs 1 <= N <= M wins of the last M decisions, got N={value[0]}, "
                             f"M={value[1]}")
        return value


def default_policy_dir(topology_name: str) -> Path:
    return Path.home() / ".local" / "state" / "rlte" / "controller" / topology_name


def bundle_version(bundle: Any) -> str:
    return str(bundle.manifest.onnx_sha256)[:VERSION_LENGTH]


def write_json_atomically(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        with open(partial, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@dataclass
class Inference:
    """One inference in its own thread; ``done`` is set when it returned or raised."""

    done: threading.Event
    ratios: np.ndarray | None = None
    error: str | None = None
    seconds: float = 0.0


class PolicyRuntime:
    """Owned by the controller app; safe to call from the API's threads."""

    def __init__(self, state: ControllerState, policy_dir: Path, config: RuntimeConfig | None = None, *,
                 loader: Callable[[Path], Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.config = config or RuntimeConfig()
        self.dir = Path(policy_dir).expanduser()  # created on the first deployment, not before
        self.clock = clock
        self.loader = loader or (lambda path: load_bundle(path, topology=state.plan.topology, pathset=state.pathset))
        self.installer: Installer | None = None
        self.lock = threading.RLock()            # deploy / mode / rollback / a decision's bookkeeping
        self.deciding = threading.Lock()         # one decision at a time; taken before ``lock``, never inside it
        self.bundle: Any = None
        self.loaded: dict[str, Any] = {}         # version -> bundle, every version loaded in this process
        self.fallback_memo: tuple[np.ndarray, np.ndarray, str] | None = None  # (matrix, ratios, kind)
        self.version: str | None = None
        self.mode: str = "shadow"
        self.deployed: list[dict[str, Any]] = []  # oldest first: {"version", "time", "reason"}
        self.history: deque[np.ndarray] = deque(maxlen=1)
        self.in_fallback = False
        self.fallback_reason: str | None = None
        self.worse_streak = 0                    # intervals in a row the policy predicted worse than the fallback
        self.clear_streak = 0                    # intervals in a row without any fallback cause
        self.wins: deque[bool] = deque(maxlen=self.config.promote_after[1] if self.config.promote_after else 1)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=self.config.keep_decisions)
        self.latencies_ms: deque[float] = deque(maxlen=1000)
        self.pending: Inference | None = None    # an inference that overran its deadline and still runs
        self.last_sampled: float | None = None   # the counter poll the last matrix in the history came from
        self.status = "no policy"
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        ps = state.pathset
        self.capacities = ps.topology.capacities

    # ------------------------------------------------------------------ versions
    def _read_current(self) -> dict[str, Any] | None:
        current = self.dir / CURRENT_FILE
        if not current.is_file():
            return None
        try:
            data = json.loads(current.read_text(encoding="utf-8"))
            version, mode, deployed = str(data["version"]), data["mode"], list(data["deployed"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{current}: not a policy state file ({exc})") from None
        if mode not in MODES:
            raise BundleError(f"{current}: unknown mode {mode!r}")
        return {"version": version, "mode": mode, "deployed": deployed}

    def restore_history(self) -> None:
        """The deployment history and last version/mode of ``current.json``, without loading its
        bundle (a new one is about to be deployed)."""
        current = self._read_current()
        if current is not None:
            with self.lock:
                self.version, self.mode, self.deployed = current["version"], current["mode"], current["deployed"]

    def resume(self) -> bool:
        """Load the version and mode ``current.json`` names; False when there is none. A stored
        bundle that no longer loads is a BundleError naming it."""
        current = self._read_current()
        if current is None:
            return False
        with self.lock:
            self.deployed = current["deployed"]
            bundle = self._load_stored(current["version"])
            self._adopt(bundle, current["version"])
            self.mode = current["mode"]
            self._audit_event("resume", f"restart resumed version {self.version} in mode {self.mode}")
        return True

    def _load_stored(self, version: str) -> Any:
        """A deployed version: the bundle already loaded in this process (a rollback then costs no
        ONNX session build: ~40 ms on Abilene's graph network), else its stored copy."""
        if version in self.loaded:
            return self.loaded[version]
        path = self.dir / BUNDLES_DIR / version
        if not path.is_dir():
            raise BundleError(f"version {version!r} is not in {self.dir / BUNDLES_DIR}; deployed versions: "
                              f"{', '.join(self.versions()) or 'none'}")
        bundle = self.loaded[version] = self.loader(path)
        return bundle

    def versions(self) -> list[str]:
        """Deployed versions, oldest first, each once."""
        return list(dict.fromkeys(entry["version"] for entry in self.deployed))

    def deploy(self, path: str | Path, mode: str | None = None, reason: str = "deploy") -> str:
        """Load the bundle at ``path`` (refused with a BundleError, nothing changed, when it is not
        one for this network), copy it into the state directory and decide with it from now on.
        ``mode`` None: the current mode when it is the version already deployed, else shadow (a
        new version is never active before someone promotes it). Returns its version."""
        source = Path(path).expanduser()
        if mode is not None and mode not in MODES:
            raise BundleError(f"unknown mode {mode!r}; choose shadow or active")
        bundle = self.loader(source)  # BundleError: nothing changed
        version = bundle_version(bundle)
        self.loaded[version] = bundle
        with self.lock:
            stored = self.dir / BUNDLES_DIR / version
            stored.parent.mkdir(parents=True, exist_ok=True)
            if not stored.is_dir():
                partial = stored.with_name(f".{version}.{secrets.token_hex(4)}")
                try:
                    partial.mkdir()
                    for name in (MANIFEST_FILE, bundle.manifest.onnx_file):
                        shutil.copy2(source / name, partial / name)
                    os.replace(partial, stored)
                except BaseException:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
            if mode is None:
                mode = self.mode if version == self.version else "shadow"
            self._adopt(bundle, version)
            self.mode = mode
            if not self.deployed or self.deployed[-1]["version"] != version:
                self.deployed.append({"version": version, "time": self.clock(), "reason": reason})
            self._persist()
            self._audit_event(reason, f"deployed version {version} from {source} in mode {self.mode}")
        return version

    def rollback(self, version: str | None = None) -> str:
        """Back to ``version`` (a deployed one), or to the version deployed before the current one;
        in active mode the restored version decides and installs at once (:meth:`decide_now`)."""
        with self.lock:
            if version is None:
                earlier = [e["version"] for e in self.deployed[:-1] if e["version"] != self.version]
                if not earlier:
                    raise BundleError("there is no earlier version to roll back to"
                                      + (f" (deployed: {', '.join(self.versions())})" if self.deployed else ""))
                version = earlier[-1]
            if version not in self.versions():
                raise BundleError(f"version {version!r} was never deployed here; deployed versions: "
                                  f"{', '.join(self.versions()) or 'none'}")
            previous = self.version
            bundle = self._load_stored(version)
            self._adopt(bundle, version)
            self.deployed.append({"version": version, "time": self.clock(), "reason": f"rollback from {previous}"})
            self._persist()
            self._audit_event("rollback", f"rolled back from {previous} to {version}")
        if self.mode == "active":  # restore its routing now, not an interval later
            self.decide_now()
        return version

    def set_mode(self, mode: str, reason: str = "by an explicit command", *, decide: bool = True) -> None:
        """Shadow or active; promotion to active decides and installs at once (:meth:`decide_now`)
        unless ``decide`` is False (the decision loop promoting installs its own decision)."""
        if mode not in MODES:
            raise BundleError(f"unknown mode {mode!r}; choose shadow or active")
        with self.lock:
            if self.bundle is None:
                raise BundleError("no policy is deployed: deploy a bundle first (PUT /policy)")
            previous, self.mode = self.mode, mode
            self.wins.clear()
            self._persist()
            kind = "promotion" if (previous, mode) == ("shadow", "active") else "mode"
            self._audit_event(kind, f"mode {previous} -> {mode} {reason}")
        if kind == "promotion" and decide:
            self.decide_now()

    def _adopt(self, bundle: Any, version: str) -> None:
        self.bundle, self.version = bundle, version
        drift = getattr(bundle, "drift", None)
        keep = max(int(bundle.history), int(bundle.envelope.window) if drift is None else drift.history)
        self.history = deque(list(self.history)[-keep:], maxlen=keep)
        self.in_fallback, self.fallback_reason, self.worse_streak, self.clear_streak = False, None, 0, 0
        self.wins.clear()
        self.status = "warming up"

    def _persist(self) -> None:
        write_json_atomically(self.dir / CURRENT_FILE,
                              {"version": self.version, "mode": self.mode, "deployed": self.deployed})

    # ------------------------------------------------------------------ audit log
    def _append(self, record: dict[str, Any]) -> None:
        with open(self.dir / AUDIT_FILE, "a", encoding="utf-8") as file:
            file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self.decisions.append(record)

    def _audit_event(self, kind: str, reason: str) -> None:
        self._append({"time": self.clock(), "kind": kind, "version": self.version, "mode": self.mode,
                      "reason": reason})
        LOG.info("policy: %s", reason)

    # ------------------------------------------------------------------ measurements and predictions
    def measured_matrix(self) -> np.ndarray | None:
        """The last polling interval's traffic matrix in model units, None until every pair is measured."""
        rates = self.state.pair_rates()
        if rates is None or not np.isfinite(rates).all():
            return None
        ps = self.state.pathset
        n = ps.topology.num_nodes
        matrix = np.zeros((n, n))
        matrix[ps.pairs[:, 0], ps.pairs[:, 1]] = np.maximum(rates, 0.0) / self.state.capacity_scale
        return matrix

    def utilization(self, matrix: np.ndarray, ratios: np.ndarray, backup: dict | None = None) -> np.ndarray:
        ps = self.state.pathset
        demand = ps.demands(matrix)
        loads = np.asarray(ps.incidence @ (ratios * demand[:, None]).ravel(), dtype=np.float64)
        for pair, links in (backup or {}).items():
            loads[list(links)] += demand[pair]
        return loads / self.capacities

    def fallback_routing(self, matrix: np.ndarray) -> tuple[np.ndarray, str]:
        """The classic routing to fall back to (``config.fallback``): the path LP (tie-break
        min_load) on ``matrix`` scaled by the largest capacity, or a fixed routing of
        :mod:`controllers.decision`; shortest path when the LP fails."""
        ps = self.state.pathset
        if self.config.fallback != "lp":
            return make_decision(self.config.fallback).decide(self.state.view()), self.config.fallback
        try:
            from agents.lp import path_lp

            solution = path_lp(ps, matrix / float(self.capacities.max()), tie_break="min_load",
                               time_limit_s=self.config.lp_time_limit_s)
            return solution.ratios, "lp"
        except Exception as exc:  # LPError, or anything else: the floor below always exists
            LOG.warning("fallback LP failed (%s); using shortest path", exc)
            return FirstPath().decide(self.state.view()), "shortest_path"

    def _fallback_for(self, matrix: np.ndarray) -> tuple[np.ndarray, str]:
        """:meth:`fallback_routing`, solved once per measured matrix: a decision right after a
        rollback or a promotion reads the same matrix as the interval's own (the LP: ~30 ms on
        Abilene, the most of such a decision)."""
        if self.config.fallback != "lp":  # a fixed routing: nothing to save, and it follows the links' status
            return self.fallback_routing(matrix)
        memo = self.fallback_memo
        if memo is not None and np.array_equal(memo[0], matrix):
            return memo[1], memo[2]
        ratios, kind = self.fallback_routing(matrix)
        self.fallback_memo = (matrix.copy(), ratios, kind)
        return ratios, kind

    def _infer(self, bundle: Any, history: np.ndarray) -> Inference:
        """The bundle's decision, waited for ``decision_timeout_s`` at most."""
        job = Inference(threading.Event())

        def work() -> None:
            started = time.perf_counter()
            try:
                job.ratios = np.asarray(bundle.decide(history), dtype=np.float64)
            except BundleError as exc:
                job.error = f"invalid decision: {exc}"
            except Exception as exc:  # whatever the bundle raises is its failure, not the controller's
                job.error = f"inference failed: {type(exc).__name__}: {exc}"
            finally:
                job.seconds = time.perf_counter() - started
                job.done.set()

        threading.Thread(target=work, name="policy-inference", daemon=True).start()
        if not job.done.wait(self.config.decision_timeout_s):
            self.pending = job
            return Inference(job.done, error=f"inference timed out after {self.config.decision_timeout_s:g} s",
                             seconds=self.config.decision_timeout_s)
        return job

    def _validate(self, ratios: np.ndarray) -> str | None:
        ps = self.state.pathset
        if ratios.shape != (ps.num_pairs, ps.k):
            return f"invalid decision: ratios of shape {ratios.shape}, expected {(ps.num_pairs, ps.k)}"
        try:
            check_ratios(ratios, np.asarray(ps.mask))
        except BundleError as exc:
            return f"invalid decision: {exc}"
        return None

    # ------------------------------------------------------------------ one decision
    def step(self) -> dict[str, Any] | None:
        """One decision interval: the last polling interval's matrix joins the history, then
        :meth:`decide_now`. Returns its audit record (None while there is nothing to decide)."""
        with self.deciding:
            with self.lock:
                if self.bundle is None:
                    return None
            matrix = self.measured_matrix()
            if matrix is None:
                self.status = "waiting for telemetry"
                return None
            sampled = self.state.pair_sample_time()
            if sampled == self.last_sampled:  # no poll since the last decision (one skipped during an install):
                return None                   # the same matrix twice would weigh double in the history
            with self.lock:
                self.last_sampled = sampled
                self.history.append(matrix)
            return self._decide()

    def decide_now(self) -> dict[str, Any] | None:
        """A decision on the history as it is (after a rollback or a promotion: the routing
        changes now, not an interval later)."""
        with self.deciding:
            return self._decide()

    def _drift(self, bundle: Any, history: np.ndarray) -> tuple[dict[str, Any], str | None]:
        """The drift statistics of ``history`` for the audit log, and the fallback cause if it drifted."""
        detector: DriftDetector | None = getattr(bundle, "drift", None)
        if detector is None:  # a bundle without KS / JS statistics: the envelope score alone, one window
            envelope = bundle.envelope
            score = float(envelope.score(history))
            statistics = {"envelope": {"score": score, "threshold": float(envelope.threshold),
                                       "above": score > envelope.threshold}}
            fired = ["envelope"] if score > envelope.threshold else []
            consecutive = 1
        else:
            statistics = detector.score(history)
            fired = detector.drifted(history)[1]
            consecutive = detector.consecutive
        fired = [name for name in fired if name in self.config.drift_statistics]
        record = {"statistics": statistics, "drifted": bool(fired), "fired": fired, "consecutive": consecutive}
        if not fired:
            return record, None
        named = ", ".join(f"{name} {statistics[name]['score']:.4g} > {statistics[name]['threshold']:.4g}"
                          for name in fired)
        windows = "the last window" if consecutive == 1 else f"each of the last {consecutive} windows"
        return record, f"drift: the measured traffic left the training distribution ({named} in {windows})"

    def _decide(self) -> dict[str, Any] | None:
        started = time.perf_counter()
        with self.lock:
            bundle, version, mode = self.bundle, self.version, self.mode
            if bundle is None or not self.history:
                return None
            history = np.stack(self.history)
        need = self.history.maxlen or 1
        if len(history) < need:
            self.status = f"warming up ({len(history)} of {need} matrices)"
            return None
        matrix = history[-1]
        measured = self.state.link_utilization()
        measured_mlu = None if measured is None or not np.isfinite(measured).all() else float(measured.max())
        causes: list[str] = []
        if self.pending is not None and not self.pending.done.is_set():
            inference = Inference(self.pending.done, error="the previous inference is still running past its "
                                                           "deadline")
        else:
            self.pending = None
            inference = self._infer(bundle, history[-int(bundle.history):])
        ratios = inference.ratios
        if inference.error is None and ratios is not None:
            problem = self._validate(ratios)
            if problem is not None:
                inference.error, ratios = problem, None
        if inference.error is not None:
            ratios = None
            causes.append(inference.error)
        timed_out = inference.error is not None and "timed out" in inference.error
        if not timed_out:
            self.latencies_ms.append(1e3 * inference.seconds)
        drift, drift_cause = self._drift(bundle, history)
        if drift_cause is not None:
            causes.append(drift_cause)
        fallback, fallback_kind = self._fallback_for(matrix)
        effective = self.state.effective
        util_fallback = self.utilization(matrix, fallback)
        util_incumbent = self.utilization(matrix, effective.ratios, effective.backup)
        util_policy = None if ratios is None else self.utilization(matrix, ratios)
        mlu = {"policy": None if util_policy is None else float(util_policy.max()),
               "incumbent": float(util_incumbent.max()), "fallback": float(util_fallback.max())}
        margin = self.config.mlu_margin
        if mlu["policy"] is not None and mlu["policy"] > mlu["fallback"] * (1 + margin) + 1e-12:
            self.worse_streak += 1
        elif mlu["policy"] is not None:
            self.worse_streak = 0
        if self.worse_streak >= self.config.hurt_intervals:
            causes.append(f"hurt: the policy's predicted MLU was more than {margin:.0%} above the fallback's for "
                          f"{self.worse_streak} intervals in a row ({mlu['policy']:.4g} vs {mlu['fallback']:.4g})")
        events = self._fallback_transition(causes)
        if mode == "shadow" and self.config.promote_after is not None:
            events += self._promote_if_earned(mlu, version)
        with self.lock:
            unchanged = self.version == version
            mode = self.mode if unchanged else mode
        action = "shadow"
        install: dict[str, Any] | None = None
        if mode == "active" and unchanged:
            chosen, source = ((fallback, f"fallback:{fallback_kind}") if self.in_fallback or ratios is None
                              else (ratios, f"policy:{version}"))
            action, install = self._install(chosen, source)
        record = {
            "time": self.clock(), "kind": "decision", "version": version, "mode": mode,
            "status": "fallback" if self.in_fallback else "policy",
            "fallback_reason": self.fallback_reason, "causes": causes, "events": events,
            "action": action, "install": install,
            "installed_version": self.state.version, "installed_source": self.state.decision.name,
            "drift": drift, "predicted_mlu": mlu, "measured_mlu": measured_mlu, "fallback_routing": fallback_kind,
            "latency_ms": {"inference": None if timed_out else 1e3 * inference.seconds,
                           "step": 1e3 * (time.perf_counter() - started)},
            "explanation": self._explain(ratios, util_policy, util_incumbent, effective.ratios),
        }
        with self.lock:
            self.status = record["status"]
            self._append(record)
        for event in events:
            LOG.warning("policy %s: %s (%s)", version, event["kind"], event["reason"])
        return record

    def _promote_if_earned(self, mlu: dict[str, float | None], version: str | None) -> list[dict[str, str]]:
        """The operator's rule (``promote_after`` = N of M): a shadow decision is a win when the
        policy decided, nothing made it fall back, and its predicted MLU is below the incumbent's."""
        wins, of = self.config.promote_after
        self.wins.append(not self.in_fallback and mlu["policy"] is not None and mlu["policy"] < mlu["incumbent"])
        if len(self.wins) < of or sum(self.wins) < wins:
            return []
        reason = (f"automatically: the policy's predicted MLU beat the incumbent's on {sum(self.wins)} of the last "
                  f"{of} decisions (rule: {wins} of {of})")
        with self.lock:
            if self.version != version or self.mode != "shadow":
                return []
            self.set_mode("active", reason, decide=False)  # this decision installs below
        return [{"kind": "promotion", "reason": reason}]

    def _fallback_transition(self, causes: list[str]) -> list[dict[str, str]]:
        events = []
        if causes:
            self.clear_streak = 0
            if not self.in_fallback:
                self.in_fallback, self.fallback_reason = True, "; ".join(causes)
                events.append({"kind": "fallback", "reason": self.fallback_reason})
        elif self.in_fallback:
            self.clear_streak += 1
            if self.clear_streak >= self.config.recover_intervals:
                events.append({"kind": "recovered", "reason": f"every cause ({self.fallback_reason}) gone for "
                                                              f"{self.clear_streak} intervals"})
                self.in_fallback, self.fallback_reason, self.clear_streak = False, None, 0
        return events

    def _install(self, ratios: np.ndarray, source: str) -> tuple[str, dict[str, Any]]:
        if self.installer is None:
            return "not_installed", {"error": "the controller has no install path yet"}
        requested = self.state.requested
        moved = np.abs(ratios - requested).max(axis=1)
        changed = np.flatnonzero(moved > self.config.reinstall_tolerance)
        if self.state.decision.name == source and changed.size == 0:
            return "unchanged", {"source": source, "pairs_changed": 0}
        merged = requested.copy()  # the pairs that moved less keep their groups, and the ratios they realize
        merged[changed] = ratios[changed]
        try:
            report = self.installer(merged, source, changed.tolist())
            return "installed", {"source": source, "pairs_changed": int(changed.size), **report}
        except (RequestError, RuntimeError) as exc:  # lock busy (503) or refused: next interval tries again
            return "install_failed", {"source": source, "error": str(exc)}

    def _explain(self, ratios: np.ndarray | None, util_policy: np.ndarray | None, util_incumbent: np.ndarray,
                 incumbent: np.ndarray) -> dict[str, Any]:
        state = self.state
        inc_link = int(np.argmax(util_incumbent))
        explanation: dict[str, Any] = {
            "incumbent_bottleneck": {"link": state.link_label(inc_link), "utilization": float(util_incumbent[inc_link])}}
        text = f"incumbent bottleneck {state.link_label(inc_link)} at {util_incumbent[inc_link]:.3f}"
        if ratios is not None and util_policy is not None:
            link = int(np.argmax(util_policy))
            explanation["policy_bottleneck"] = {"link": state.link_label(link), "utilization": float(util_policy[link])}
            moved = 0.5 * np.abs(ratios - incumbent).sum(axis=1)
            top = [int(p) for p in np.argsort(-moved, kind="stable")[:3] if moved[p] > 1e-9]
            explanation["moved_pairs"] = [{"pair": state.pair_label(p), "moved": float(moved[p]),
                                           "from": np.round(incumbent[p], 4).tolist(),
                                           "to": np.round(ratios[p], 4).tolist()} for p in top]
            text = (f"policy bottleneck {state.link_label(link)} at {util_policy[link]:.3f}; " + text
                    + "; moved most: " + (", ".join(f"{state.pair_label(p)} ({moved[p]:.0%} of its traffic)"
                                                    for p in top) or "nothing"))
        else:
            text = "no usable policy decision; " + text
        explanation["text"] = text
        return explanation

    # ------------------------------------------------------------------ running
    def start(self, installer: Installer) -> None:
        """Decide every ``decision_interval_s`` in a thread of its own (a real thread: its waits
        have deadlines and block nobody else)."""
        self.installer = installer
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="policy-runtime", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.wait(self.config.decision_interval_s):
            try:
                self.step()
            except Exception:  # one bad interval must not end the runtime
                LOG.exception("policy decision failed")

    # ------------------------------------------------------------------ reports
    def report(self) -> dict[str, Any]:
        with self.lock:
            latencies = np.array(self.latencies_ms) if self.latencies_ms else None
            last = next((r for r in reversed(self.decisions) if r["kind"] == "decision"), None)
            manifest = getattr(self.bundle, "manifest", None)
            return {
                "version": self.version, "mode": self.mode, "status": self.status,
                "fallback_reason": self.fallback_reason,
                "policy": None if manifest is None else {"name": manifest.policy, "kind": manifest.kind,
                                                         "topology": manifest.topology, "history": manifest.history,
                                                         "held_out_median": manifest.held_out.median},
                "deployed": list(self.deployed),
                "decision_interval_s": self.config.decision_interval_s,
                "decision_timeout_s": self.config.decision_timeout_s,
                "latency_ms": None if latencies is None else {
                    "count": len(latencies), "last": float(latencies[-1]),
                    "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
                    "max": float(latencies.max())},
                "last_decision": last,
                "state_dir": str(self.dir),
            }

    def since(self, since: float) -> list[dict[str, Any]]:
        with self.lock:
            return [record for record in self.decisions if record["time"] > since]


__all__ = ["AUDIT_FILE", "CURRENT_FILE", "MODES", "PolicyRuntime", "RuntimeConfig", "bundle_version",
           "default_policy_dir"]
