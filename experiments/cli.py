"""The ``rlte`` command line."""

from __future__ import annotations

import functools
import json
import os
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.lp import SCALE_MODES, LPError
from topologies import RoutingError, TopologyError, TrafficError, list_topologies, load_topology

from .compare import CompareSettings, report_json, run_compare, write_json_atomically

app = typer.Typer(help="rlte: reinforcement-learning traffic engineering testbed.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
topo_app = typer.Typer(help="Browse the bundled topologies.", no_args_is_help=True)
app.add_typer(topo_app, name="topo")
policy_app = typer.Typer(help="Trained policies for the live network.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # one line per error, easy to grep

from controllers.client import ControllerError  # noqa: E402  (standard library only)
from envs.emulation import EmulationError  # noqa: E402

USER_ERRORS = (TopologyError, TrafficError, RoutingError, LPError, ValueError, FileNotFoundError, EmulationError,
               ControllerError)


# Bad input is one line, but ValueError is also what a bug may raise: with this variable set
# the traceback behind the line is printed too (for a bug report), as HYDRA_FULL_ERROR does.
TRACEBACK_VARIABLE = "RLTE_TRACEBACK"


def print_error(exc: BaseException) -> None:
    """One ``error:`` line on stderr; the message is printed as written (its brackets are not
    markup). With ``RLTE_TRACEBACK=1`` the traceback comes first."""
    if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
        errors.out("".join(traceback.format_exception(exc)).rstrip(), highlight=False)
    errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)


def friendly_errors(command):
    """Bad input ends with one clear line on stderr and exit status 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            print_error(exc)
            raise typer.Exit(2) from None

    return wrapper


def _gbps(bps: float) -> str:
    return f"{bps / 1e9:.3g} Gb/s"


@topo_app.command("list")
@friendly_errors
def topo_list() -> None:
    """List curated topologies, generators and every Topology Zoo network."""
    groups = list_topologies()
    table = Table(title="Curated topologies", show_lines=False)
    for column in ("name", "nodes", "links", "capacity", "notes"):
        table.add_column(column)
    for name in groups["curated"]:
        topo = load_topology(name)
        caps = topo.capacities
        table.add_row(name, str(topo.num_nodes), str(topo.num_links), f"{_gbps(caps.min())}-{_gbps(caps.max())}",
                      next((n for n in topo.notes if n.startswith("capacity")), ""))
    console.print(table)
    console.print("[bold]Generators:[/] fat_tree:K  leaf_spine:SPINES,LEAVES  waxman:n=N,seed=S")
    console.print(f"[bold]Topology Zoo ({len(groups['zoo'])} networks, by file name):[/]")
    console.print(", ".join(groups["zoo"]), highlight=False)


@topo_app.command("show")
@friendly_errors
def topo_show(
    name: str = typer.Argument(..., help="Catalog name, generator spec (fat_tree:8) or file path."),
    png: Optional[Path] = typer.Option(None, help="Write a picture of the topology to this PNG file."),
    links: bool = typer.Option(False, "--links", help="Also list every link."),
) -> None:
    """Nodes, links, capacities and provenance of one topology."""
    topo = load_topology(name)
    summary = topo.summary()
    console.print(f"[bold]{topo.name}[/]: {topo.num_nodes} nodes, {topo.num_links} directed links, "
                  f"capacity {_gbps(summary['capacity_bps']['min'])}-{_gbps(summary['capacity_bps']['max'])}, "
                  f"delay {summary['delay_s']['min'] * 1e3:.3g}-{summary['delay_s']['max'] * 1e3:.3g} ms")
    console.print(f"fingerprint {summary['fingerprint']}")
    for note in topo.notes:
        console.print(f"  - {escape(note)}", highlight=False)
    if topo.num_nodes <= 60:
        table = Table(title="Nodes")
        for column in ("#", "name", "latitude", "longitude", "role", "out-links"):
            table.add_column(column)
        for i, node in enumerate(topo.nodes):
            table.add_row(str(i), node.name, f"{node.latitude:.3f}" if node.latitude is not None else "-",
                          f"{node.longitude:.3f}" if node.longitude is not None else "-", node.role or "-",
                          str(int((topo.link_src == i).sum())))
        console.print(table)
    if links:
        table = Table(title="Links")
        for column in ("#", "src", "dst", "capacity", "delay (ms)", "weight"):
            table.add_column(column)
        for i, link in enumerate(topo.links):
            table.add_row(str(i), link.src, link.dst, _gbps(link.capacity_bps), f"{link.delay_s * 1e3:.3f}",
                          "-" if link.weight is None else f"{link.weight:g}")
        console.print(table)
    if png is not None:
        from .plotting import draw_topology

        console.print(f"picture written to {draw_topology(topo, png)}")


@app.command()
@friendly_errors
def compare(
    topology: str = typer.Option("abilene", help="Topology name (see `rlte topo list`)."),
    traffic: str = typer.Option("abilene-test", help="abilene-test, abilene-train, b4, or a synthetic model: "
                                                      "gravity, bimodal, uniform, hotspot, diurnal."),
    every: int = typer.Option(1, help="Evaluate every N-th traffic matrix."),
    start: Optional[int] = typer.Option(None, help="First matrix index (default: the first with history)."),
    paths: int = typer.Option(4, help="Candidate hop-shortest paths per pair for the LP policies."),
    count: int = typer.Option(100, help="Synthetic traffic: matrices to evaluate (as many again train lp_mean)."),
    seed: int = typer.Option(0, help="Synthetic traffic: random seed."),
    target_mlu: Optional[float] = typer.Option(None, help="Scale traffic so its optimal MLU is this."),
    scale_mode: str = typer.Option("auto", help=f"With --target-mlu: {', '.join(SCALE_MODES)}, or auto "
                                                "(peak for time series, each otherwise)."),
    out: Optional[Path] = typer.Option(None, help="Write per-matrix results as JSON here."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Normalized MLU (MLU / exact optimum) of every baseline: median, p90, max."""
    if out is not None and not out.parent.exists():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    if scale_mode not in (*SCALE_MODES, "auto"):
        raise ValueError(f"--scale-mode must be one of {', '.join(SCALE_MODES)}, auto; got {scale_mode!r}")
    settings = CompareSettings(topology=topology, traffic=traffic, every=every, start=start, paths=paths,
                               count=count, seed=seed, target_mlu=target_mlu, scale_mode=scale_mode)
    began = time.perf_counter()
    bar = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=errors, disable=not progress, transient=True)
    with bar:
        task = bar.add_task("preparing", total=None)
        report = run_compare(
            settings,
            progress=lambda name, n: bar.update(task, advance=n, description=name),
            on_total=lambda total: bar.update(task, total=total, completed=0),
        )
    table = Table(title=f"{report.topology} / {report.traffic}: normalized MLU on {len(report.tm_index)} matrices "
                        f"(index {report.tm_index[0]}..{report.tm_index[-1]} step {every})")
    for column in ("policy", "median", "p90", "max", "mean", "decision time"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for name, result in report.policies.items():
        s = result.summary
        table.add_row(name, f"{s['median']:.3f}", f"{s['p90']:.3f}", f"{s['max']:.3f}", f"{s['mean']:.3f}",
                      f"{s['decision_time_s'] * 1e3:.2f} ms")
    console.print(table)
    console.print(f"optimal MLU (exact multicommodity flow): median {np.median(report.optimal_mlu):.4g}"
                  f" · {time.perf_counter() - began:.1f} s", highlight=False)
    if out is not None:
        write_json_atomically(out, report_json(report))
        console.print(f"per-matrix results written to {out}")


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
CONFIG_DIR = Path(__file__).parent / "conf"


def agent_names(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The agents `rlte train agent=NAME` offers: the config folder's, the default first."""
    from omegaconf import DictConfig, OmegaConf

    default = next(entry["agent"] for entry in OmegaConf.load(config_dir / "train.yaml").defaults
                   if isinstance(entry, DictConfig) and "agent" in entry)
    names = sorted(path.stem for path in (config_dir / "agent").glob("*.yaml"))
    return [default, *(name for name in names if name != default)]


@app.command(context_settings=EXTRA_ARGS, add_help_option=False,
             help=f"Train an agent (Hydra): rlte train \\[agent={'|'.join(agent_names())}] (the first is the "
                  "default) topology=abilene traffic=abilene-real seed=3; experiment variants: rlte train -cd "
                  "bench/conf agent=NAME; multirun: rlte train -m seed=1,2,3 (then rlte summary on its folder); "
                  "continue a stopped run: rlte train resume=runs/DIR; help and config groups: rlte train --help.")
@friendly_errors
def train(ctx: typer.Context) -> None:
    from .hydra_app import run_train

    run_train(list(ctx.args))


@app.command("eval", context_settings=EXTRA_ARGS, add_help_option=False)
@friendly_errors
def evaluate(ctx: typer.Context) -> None:
    """Compare a trained run with every baseline on held-out traffic:
    rlte eval run=runs/<dir> \\[eval.every=24] \\[out=FILE.json];
    measured on the emulated network (root): add backend=mininet;
    a graph policy on another network: add topology=NAME traffic=NAME."""
    from .hydra_app import run_eval

    run_eval(list(ctx.args))


@app.command()
@friendly_errors
def summary(
    paths: list[Path] = typer.Argument(..., help="Run directories, folders of runs (a multirun's), or table files."),
    reference: str = typer.Option("lp_previous", help="Count the runs in which each policy's median is below "
                                                      "this policy's, on the same matrices."),
    out: Optional[Path] = typer.Option(None, help="Write the summary as JSON here."),
) -> None:
    """Several runs' tables side by side (e.g. a multirun's seeds): each policy's median, p90
    and max per run, their mean, and in how many runs it beat the reference."""
    from .summary import COLUMNS, RunTable, rows, summarize, summary_json, table_files, title

    if out is not None and not out.parent.exists():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    groups = summarize([RunTable.read(path) for path in table_files(paths)], reference)
    for group in groups:
        table = Table(title=title(group))
        for column in (*COLUMNS, f"below {reference}"):
            table.add_column(column, justify="left" if column == "policy" else "right")
        for row in rows(group):
            table.add_row(*row)
        console.print(table)
    if out is not None:
        write_json_atomically(out, json.dumps(summary_json(groups), indent=1))
        console.print(f"written to {out}")


@app.command()
@friendly_errors
def fidelity(
    topology: str = typer.Option("abilene", help="Topology name or file."),
    traffic: str = typer.Option("abilene-test", help="Real dataset (abilene-test, b4) or a synthetic model "
                                                     "(gravity, uniform, ...) for other topologies."),
    count: int = typer.Option(3, help="Traffic matrices to replay."),
    every: int = typer.Option(288, help="Take every N-th matrix of the sequence (288 = one a day at 5 min)."),
    k: int = typer.Option(4, help="Candidate paths per pair for the LP routing."),
    peak_mlu: float = typer.Option(0.9, help="Scale each matrix so the worst routing's twin MLU is this."),
    flows_per_pair: int = typer.Option(32, help="UDP flows per pair (select groups hash flows onto paths)."),
    flow_addresses: str = typer.Option("even", help="Source addresses of a pair's flows: even (their hashes cover "
                                                    "the select groups' slots evenly) or sequential."),
    window: float = typer.Option(2.0, help="Measurement window per run, seconds."),
    capacity_scale: float = typer.Option(1e-3, help="Emulated capacity = capacity × this (10 Gb/s -> 10 Mb/s)."),
    out: Optional[Path] = typer.Option(None, help="Write the report (JSON) here."),
) -> None:
    """Replay traffic under shortest path, ECMP and the LP optimum in the twin and in Mininet
    (needs root) and report how far the twin is from what the packets did."""
    import json as json_module

    from envs.emulation import require_emulation
    from envs.mininet_backend import MininetBackend, ReplaySettings
    from topologies import load_traffic
    from topologies.traffic import REAL_DATASETS

    from .fidelity import FidelitySettings, fidelity_pathset, run_fidelity

    if count < 1 or every < 1:
        raise ValueError("--count and --every must be at least 1")
    settings = FidelitySettings(k=k, peak_mlu=peak_mlu)
    require_emulation()
    topo = load_topology(topology)
    sequence = load_traffic(traffic, topo) if traffic in REAL_DATASETS else \
        load_traffic(traffic, topo, count=count * every, seed=0)
    indices = list(range(0, len(sequence), every))[:count]
    pathset = fidelity_pathset(topo, k)
    replay = ReplaySettings(flows_per_pair=flows_per_pair, window_s=window, flow_addresses=flow_addresses)
    bar = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=errors)
    with MininetBackend(pathset, capacity_scale=capacity_scale, replay=replay) as emulated, bar:
        task = bar.add_task("", total=len(indices) * len(settings.routings))
        report = run_fidelity(pathset, sequence.matrices, indices, emulated, settings,
                              progress=lambda: bar.advance(task))
        report.notes.extend(emulated.network.notes)
    result = report.to_dict()
    table = Table(title=f"twin vs Mininet on {topo.name}: {len(report.samples)} runs")
    for column in ("", "util. MAE", "util. p95", "MLU rel. err (mean)", "MLU rel. err (max)"):
        table.add_column(column)
    calibration = result["calibration"]
    rows = [("uncalibrated (all runs)", result["errors"]),
            ("held-out, before calibration", calibration["before"]),
            (f"held-out, after α = {calibration['load_factor']:.4f}", calibration["after"])]
    for label, error in rows:
        table.add_row(label, f"{error['utilization_mae']:.4f}", f"{error['utilization_p95']:.4f}",
                      f"{error['mlu_relative_error_mean']:.2%}", f"{error['mlu_relative_error_max']:.2%}")
    console.print(table)
    console.print(f"same ranking of routings in every matrix: {result['same_ranking']} (MLUs within "
                  f"{result['ranking_tolerance']:.0%} of each other count as ties)", highlight=False)
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    if out is not None:
        write_json_atomically(out, json_module.dumps(result, indent=1))


@app.command(short_help="Replay a traffic series on an emulated network (root) under a controller that is "
                        "already running.")
@friendly_errors
def net(
    topology: str = typer.Option("abilene", help="Topology name or file: the one the controller was started with."),
    controller: str = typer.Option("127.0.0.1:6653", "--controller", help="OpenFlow address HOST:PORT of the "
                                                                           "controller that is already running "
                                                                           "(`rlte controller`); none is started."),
    api: str = typer.Option("http://127.0.0.1:8080", "--api", help="The controller's HTTP API: its readiness "
                                                                   "report, path set and measured traffic. 'none': "
                                                                   "wait only for the switches' OpenFlow "
                                                                   "connections and measure nothing."),
    traffic: str = typer.Option("abilene-test", help="Real dataset (abilene-test, b4) or a synthetic model "
                                                     "(gravity, uniform, ...)."),
    period: float = typer.Option(5.0, help="Seconds each matrix is played (time compressed: a 5-minute matrix "
                                           "for 5 s); at least 1."),
    start: int = typer.Option(0, help="First matrix index."),
    count: Optional[int] = typer.Option(None, help="Matrices to play (default: to the end of the series; "
                                                   "synthetic traffic: 100)."),
    scale: float = typer.Option(0.5, help="Target peak optimal MLU: the replayed matrices are multiplied by one "
                                          "factor so the largest optimal (multicommodity-flow) MLU among them is "
                                          "this, then sent at model rate × the capacity scale, as the emulated "
                                          "links are shaped."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File with the API token (default: "
                                                                         "$RLTE_CONTROLLER_TOKEN); reads need none."),
    seed: int = typer.Option(0, help="Synthetic traffic: random seed."),
    capacity_scale: Optional[float] = typer.Option(None, help="Emulated capacity = capacity × this (default: the "
                                                              "controller's; 0.001 without --api)."),
    flows_per_pair: int = typer.Option(32, help="UDP flows per pair (select groups hash flows onto paths)."),
    ready_timeout: float = typer.Option(60.0, help="Seconds to wait for every switch to be ready."),
    out: Optional[Path] = typer.Option(None, help="Write what was offered and measured, per matrix and pair, "
                                                  "as JSON here."),
) -> None:
    """Build the emulated network (root) against a controller that is already running, wait
    until it reports every switch ready, and replay a traffic series on it until the series
    ends or Ctrl-C / SIGTERM; then remove the network. One line per matrix: its index, the
    offered payload rate, what the controller measured (its ingress counters over the
    matrix's period; Ethernet frames, so ~3% more) and the share delivered."""
    from experiments.replay import NetSettings, play, prepare, report_json

    if out is not None and not out.parent.exists():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    use_api = api.strip().lower() not in ("", "none")
    token = None
    if token_file is not None:
        token = token_file.read_text().strip()
    token = token or os.environ.get("RLTE_CONTROLLER_TOKEN") or None
    settings = NetSettings(topology=topology, traffic=traffic, controller=controller, api=api if use_api else None,
                           token=token, period_s=period, start=start, count=count, scale=scale, seed=seed,
                           capacity_scale=capacity_scale, flows_per_pair=flows_per_pair, ready_timeout_s=ready_timeout)
    plan = prepare(settings)  # every check; nothing built yet
    host, port = plan.address
    first, last = plan.indices[0], plan.indices[-1]
    compressed = f" ({plan.interval_s / 60:g} min played in {period:g} s)" if plan.interval_s else ""
    began = time.monotonic()

    def ready(backend) -> None:
        print(f"network {plan.topology.name}: {plan.topology.num_nodes} switches ready under the controller at "
              f"{host}:{port}" + (f" (API {settings.api})" if settings.api else " (no API: OpenFlow connections only)"),
              flush=True)
        print(f"replaying {plan.traffic_name} matrices {first}..{last} ({len(plan.indices)}), {period:g} s each"
              f"{compressed}: demand × {plan.factor:.4g} (peak optimal MLU {scale:g}), capacity × "
              f"{plan.capacity_scale:g}", flush=True)
        for note in backend.network.notes:
            print(f"note: {note}", flush=True)

    def line(result) -> None:
        text = f"matrix {result.index}: offered {result.offered_bps / 1e6:.2f} Mb/s"
        if settings.api:
            text += ", measured " + ("- (no counters yet)" if result.measured_bps is None else
                                     f"{result.measured_bps / 1e6:.2f} Mb/s" + (
                                         f" ({result.measured_bps / result.offered_bps:.0%})"
                                         if result.offered_bps else ""))
        if result.delivered is not None:
            text += f", delivered {result.delivered:.1%}"
        print(text, flush=True)

    report = play(plan, on_matrix=line, on_ready=ready)
    played = len(report.results)
    how = "stopped" if report.stopped else "done"
    print(f"{how}: {played} of {len(plan.indices)} matrices in {time.monotonic() - began:.1f} s; network removed",
          flush=True)
    if out is not None:
        write_json_atomically(out, json.dumps(report_json(plan, report), indent=1))
        print(f"offered and measured rates written to {out}", flush=True)


@policy_app.command("export")
@friendly_errors
def policy_export(
    run_argument: Optional[str] = typer.Argument(None, metavar="RUN", help="The run directory (or run=DIR)."),
    run: Optional[Path] = typer.Option(None, "--run", help="The run directory (instead of the argument)."),
    out: Path = typer.Option(..., "--out", help="The bundle directory to write (an earlier bundle there is "
                                                "replaced once the new one is complete)."),
) -> None:
    """Export a trained split-routing policy (agent.algorithm=gradient) as a bundle the live
    controller runs with onnxruntime: policy.onnx and manifest.json, checked against the policy
    on the run's held-out traffic."""
    if run_argument is not None and run is not None:
        raise ValueError("name the run once: as the argument or with --run")
    if run_argument is None and run is None:
        raise ValueError("say which run to export: rlte policy export run=runs/<run directory> --out BUNDLE")
    run_dir = run if run is not None else Path(run_argument.removeprefix("run="))
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    from agents.bundle import MANIFEST_FILE
    from experiments.export import export_bundle

    from .api import load_run

    manifest = export_bundle(load_run(run_dir), out)
    size = (out / manifest.onnx_file).stat().st_size
    console.print(f"bundle {out}: policy {manifest.policy} ({manifest.kind}) for {manifest.topology}, "
                  f"H={manifest.history}, parity max |diff| {manifest.parity_max_abs_diff:.2g}, "
                  f"{manifest.onnx_file} {size / 1024:.1f} KiB (+ {MANIFEST_FILE})", highlight=False, soft_wrap=True)


def _n_of_m(text: str) -> tuple[int, int]:
    wins, slash, of = text.partition("/")
    if not (slash and wins.strip().isdigit() and of.strip().isdigit()):
        raise ValueError(f"--promote-after takes N/M (e.g. 8/10: N wins of the last M decisions), got {text!r}")
    return int(wins), int(of)


@app.command()
@friendly_errors
def controller(
    topology: str = typer.Option("abilene", help="Topology name or file: the network the switches form."),
    k: int = typer.Option(4, help="Candidate hop-shortest paths per pair."),
    paths_file: Optional[Path] = typer.Option(None, help="Path set JSON (from an environment) instead of --k."),
    of_port: int = typer.Option(6653, help="OpenFlow listening port."),
    of_host: str = typer.Option("127.0.0.1", help="OpenFlow listening address."),
    api_port: int = typer.Option(8080, help="HTTP API port."),
    api_host: str = typer.Option("127.0.0.1", help="HTTP API address (loopback unless you mean it)."),
    token: Optional[str] = typer.Option(None, help="API token for changes. Visible to every user in `ps`: prefer "
                                                   "$RLTE_CONTROLLER_TOKEN or --token-file (default: the variable, or "
                                                   "generated and printed, or written to --token-file)."),
    token_file: Optional[Path] = typer.Option(None, help="Write the API token to this file (mode 600)."),
    poll_interval: float = typer.Option(1.0, help="Seconds between counter polls."),
    capacity_scale: float = typer.Option(1e-3, help="Emulated capacity = model capacity × this."),
    initial_routing: str = typer.Option("shortest_path", help="shortest_path or equal_split until told otherwise."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy bundle directory (rlte policy export) to "
                                                                 "deploy at start; a bad one stops the start."),
    mode: Optional[str] = typer.Option(None, "--mode", help="shadow (record what the policy would do) or active "
                                                            "(install it); default: the resumed mode, shadow for "
                                                            "a new version."),
    decision_interval: Optional[float] = typer.Option(None, "--decision-interval",
                                                      help="Seconds between policy decisions (default 3 × "
                                                           "--poll-interval)."),
    decision_timeout: float = typer.Option(1.0, "--decision-timeout", help="Deadline of one inference, seconds."),
    fallback: str = typer.Option("lp", "--fallback", help="Classic routing the policy falls back to: lp (the LP on "
                                                          "the last measured matrix; shortest path if it fails), "
                                                          "shortest_path or equal_split."),
    drift_statistics: str = typer.Option("ks,js,envelope", "--drift-statistics",
                                         help="Drift statistics that make the policy fall back (each is recorded "
                                              "either way): ks, js, envelope, comma-separated. docs/live.md has "
                                              "their false-alarm rates and delays on Abilene."),
    promote_after: Optional[str] = typer.Option(None, "--promote-after", metavar="N/M",
                                                help="Promote shadow -> active by itself once the policy's predicted "
                                                     "MLU beat the installed routing's on N of the last M decisions "
                                                     "(none in fallback). Default: only `rlte policy promote`."),
    policy_dir: Optional[Path] = typer.Option(None, "--policy-dir", help="State directory: deployed versions, "
                                                                         "current.json, decisions.jsonl (default "
                                                                         "~/.local/state/rlte/controller/TOPOLOGY)."),
) -> None:
    """Run the SDN controller (OpenFlow 1.3 on os-ken) for a topology, with its HTTP API."""
    from pydantic import ValidationError

    from controllers.main import ControllerConfig, run_controller

    try:
        config = ControllerConfig(topology=topology, k=k, paths_file=str(paths_file) if paths_file else None,
                                  of_host=of_host, of_port=of_port, api_host=api_host, api_port=api_port,
                                  token=token, token_file=str(token_file) if token_file else None,
                                  poll_interval_s=poll_interval, capacity_scale=capacity_scale,
                                  initial_routing=initial_routing, policy=str(policy) if policy else None,
                                  mode=mode, decision_interval_s=decision_interval,
                                  decision_timeout_s=decision_timeout,
                                  promote_after=_n_of_m(promote_after) if promote_after else None,
                                  drift_statistics=tuple(name.strip() for name in drift_statistics.split(",")),
                                  fallback=fallback,
                                  policy_dir=str(policy_dir) if policy_dir else None)
    except ValidationError as error:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                                   for e in error.errors())) from None
    run_controller(config)


def _policy_client(controller_url: str, token_file: Optional[Path]):
    from controllers.client import ControllerClient

    token = None
    if token_file is not None:
        token = token_file.read_text().strip()
    token = token or os.environ.get("RLTE_CONTROLLER_TOKEN")
    return ControllerClient(controller_url, token)


CONTROLLER_URL = typer.Option("http://127.0.0.1:8080", "--controller", help="The controller's API.")
TOKEN_FILE = typer.Option(None, "--token-file", help="File with the API token (default: $RLTE_CONTROLLER_TOKEN).")


def _print_policy(report: dict) -> None:
    latency = report.get("latency_ms") or {}
    console.print(f"version {report.get('version')} · mode {report.get('mode')} · status {report.get('status')}"
                  + (f" ({report['fallback_reason']})" if report.get("fallback_reason") else "")
                  + (f" · decision latency p50 {latency['p50']:.2f} ms, max {latency['max']:.2f} ms over "
                     f"{latency['count']}" if latency else ""), highlight=False, soft_wrap=True)
    last = report.get("last_decision")
    if last:
        console.print(f"last decision: {escape(last['explanation']['text'])}", highlight=False, soft_wrap=True)
        statistics = (last.get("drift") or {}).get("statistics") or {}
        if statistics:
            console.print("drift: " + ", ".join(f"{name} {s['score']:.3g} (threshold {s['threshold']:.3g})"
                                                for name, s in statistics.items())
                          + (f" · fired: {', '.join(last['drift']['fired'])}" if last["drift"].get("fired") else ""),
                          highlight=False, soft_wrap=True)


@policy_app.command("status")
@friendly_errors
def policy_status(controller: str = CONTROLLER_URL, token_file: Optional[Path] = TOKEN_FILE,
                  as_json: bool = typer.Option(False, "--json", help="Print the controller's report as JSON.")) -> None:
    """The controller's policy: version, mode, status, decision latency, last decision."""
    report = _policy_client(controller, token_file).policy()
    print(json.dumps(report, indent=1)) if as_json else _print_policy(report)


@policy_app.command("deploy")
@friendly_errors
def policy_deploy(bundle: Path = typer.Argument(..., help="Bundle directory, on the controller's machine."),
                  controller: str = CONTROLLER_URL, token_file: Optional[Path] = TOKEN_FILE) -> None:
    """Deploy a bundle to a running controller (it starts in shadow mode)."""
    report = _policy_client(controller, token_file).deploy_policy(str(bundle.resolve()))
    _print_policy(report)


@policy_app.command("promote")
@friendly_errors
def policy_promote(controller: str = CONTROLLER_URL, token_file: Optional[Path] = TOKEN_FILE,
                   mode: str = typer.Option("active", "--mode", help="active (promote) or shadow (demote).")) -> None:
    """Let the policy's decisions be installed (shadow -> active), or go back to shadow."""
    _print_policy(_policy_client(controller, token_file).set_policy_mode(mode))


@policy_app.command("rollback")
@friendly_errors
def policy_rollback(version: Optional[str] = typer.Argument(None, help="A deployed version (default: the one "
                                                                        "before the current)."),
                    controller: str = CONTROLLER_URL, token_file: Optional[Path] = TOKEN_FILE) -> None:
    """Go back to the previously deployed policy version (or a named one)."""
    _print_policy(_policy_client(controller, token_file).rollback_policy(version))


@policy_app.command("log")
@friendly_errors
def policy_log(controller: str = CONTROLLER_URL, token_file: Optional[Path] = TOKEN_FILE,
               since: Optional[float] = typer.Option(None, help="Only records after this time (epoch seconds)."),
               ) -> None:
    """The controller's recent policy audit records, one JSON line each."""
    for record in _policy_client(controller, token_file).decisions(since):
        print(json.dumps(record))


def main() -> None:  # pragma: no cover - console entry point
    app()
