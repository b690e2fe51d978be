"""Start the controller: build the plan from a topology, then hand over to os-ken."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from topologies import PathSet, Topology, k_shortest_paths, load_topology, pathset_from_dict

from .decision import DECISIONS


class ControllerConfig(BaseModel):
    """Everything ``rlte controller`` takes; validated before anything starts."""

    topology: str = Field(description="catalog name (abilene, b4, ...), generator spec or topology file")
    k: int = Field(4, ge=1, description="candidate paths per pair")
    metric: str = "hop"
    paths_file: str | None = Field(None, description="JSON path set (topologies.pathset_to_dict) instead of k/metric")
    of_host: str = "127.0.0.1"
    of_port: int = Field(6653, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    token: str | None = Field(None, description="bearer token for state-changing requests (default: generated)")
    token_file: str | None = Field(None, description="write the token here (mode 600)")
    poll_interval_s: float = Field(1.0, gt=0)
    capacity_scale: float = Field(1e-3, gt=0, description="emulated capacity = capacity × scale")
    initial_routing: str = "shortest_path"
    log_level: str = "INFO"
    policy: str | None = Field(None, description="bundle directory to deploy at start (agents.bundle)")
    mode: str | None = Field(None, description="shadow or active (default: the resumed mode, else shadow)")
    decision_interval_s: float | None = Field(None, gt=0, description="default: 3 × poll_interval_s")
    decision_timeout_s: float = Field(1.0, gt=0)
    fallback: str = Field("lp", description="classic routing the policy falls back to")
    drift_statistics: tuple[str, ...] = Field(("ks", "js", "envelope"),
                                              description="drift statistics that trigger the fallback")
    promote_after: tuple[int, int] | None = Field(None, description="(N, M): promote shadow -> active once the "
                                                     "policy's predicted MLU beat the incumbent's on N of the last M "
                                                     "decisions")
    policy_dir: str | None = Field(None, description="state directory (default ~/.local/state/rlte/controller/"
                                                     "<topology>)")

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str | None) -> str | None:
        if value is not None and value not in ("shadow", "active"):
            raise ValueError(f"unknown mode {value!r}; choose shadow or active")
        return value

    @field_validator("drift_statistics")
    @classmethod
    def _known_statistics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from .runtime import RuntimeConfig

        return RuntimeConfig._known_statistics(value)

    @field_validator("fallback")
    @classmethod
    def _known_fallback(cls, value: str) -> str:
        from .runtime import RuntimeConfig

        return RuntimeConfig._known_fallback(value)

    @field_validator("promote_after")
    @classmethod
    def _n_of_m(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        from .runtime import RuntimeConfig

        return RuntimeConfig._n_of_m(value)  # one rule, stated once: 1 <= N <= M

    @field_validator("initial_routing")
    @classmethod
    def _known_routing(cls, value: str) -> str:
        if value not in DECISIONS:
            raise ValueError(f"unknown initial routing {value!r}; choose one of {', '.join(DECISIONS)}")
        return value


def resolve_pathset(config: ControllerConfig, topology: Topology) -> PathSet:
    if config.paths_file:
        return pathset_from_dict(topology, json.loads(Path(config.paths_file).read_text()))
    return k_shortest_paths(topology, config.k, config.metric)


def write_secret(path: Path, text: str) -> None:
    """``text`` in a new file of mode 600, renamed over ``path``: a symlink or another file
    already there is replaced, never followed or written through (as root, following one
    would overwrite its target and change its mode)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def start_runtime(config: ControllerConfig, state):
    """The policy runtime over ``state``: the bundle of ``config.policy`` deployed, or the
    version and mode the state directory last had (none: it waits for PUT /policy)."""
    from .runtime import PolicyRuntime, RuntimeConfig, default_policy_dir

    directory = Path(config.policy_dir) if config.policy_dir else default_policy_dir(state.plan.topology.name)
    interval = config.decision_interval_s or 3 * config.poll_interval_s
    runtime = PolicyRuntime(state, directory, RuntimeConfig(decision_interval_s=interval,
                                                            decision_timeout_s=config.decision_timeout_s,
                                                            promote_after=config.promote_after,
                                                            drift_statistics=config.drift_statistics,
                                                            fallback=config.fallback))
    if config.policy:
        runtime.restore_history()  # rollback can still reach the versions deployed before
        runtime.deploy(config.policy, config.mode)
    elif runtime.resume() and config.mode and config.mode != runtime.mode:
        runtime.set_mode(config.mode)
    elif config.mode and runtime.bundle is None:
        raise ValueError("--mode needs a policy: give --policy BUNDLE (no deployed version to resume in "
                         f"{directory})")
    return runtime


def run_controller(config: ControllerConfig) -> None:
    """Blocks until the process is stopped."""
    from os_ken.lib import hub
    hub.patch(thread=False)  # as os-ken's own manager does: green sockets, real threads

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from . import app
    from .decision import make_decision
    from .fabric import FabricPlan
    from .state import ControllerState

    logging.basicConfig(level=config.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    topology = load_topology(config.topology)
    plan = FabricPlan(resolve_pathset(config, topology))
    state = ControllerState(plan, make_decision(config.initial_routing), capacity_scale=config.capacity_scale)
    runtime = start_runtime(config, state)  # a bad bundle stops the start here (BundleError)
    token = config.token or os.environ.get("RLTE_CONTROLLER_TOKEN") or secrets.token_urlsafe(24)
    if config.token_file:
        write_secret(Path(config.token_file), token)
    elif not (config.token or os.environ.get("RLTE_CONTROLLER_TOKEN")):
        print(f"API token (send as 'Authorization: Bearer <token>'): {token}", flush=True)
    app.SETTINGS = app.Settings(plan, state, config.poll_interval_s, config.api_host, config.api_port, token, runtime)
    cfg.CONF(args=["--ofp-listen-host", config.of_host, "--ofp-tcp-listen-port", str(config.of_port)],
             project="os_ken")
    logging.getLogger("rlte.controller").info(
        "managing %s: %d switches, %d pairs × %d paths; OpenFlow %s:%d, API http://%s:%d",
        topology.name, topology.num_nodes, plan.pathset.num_pairs, plan.pathset.k,
        config.of_host, config.of_port, config.api_host, config.api_port)
    AppManager.run_apps(["controllers.app"])
