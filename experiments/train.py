"""`rlte train`: build the run's data from its config, train its kind of agent
(:mod:`experiments.learners`) with TensorBoard logging and periodic held-out scores, save the
model, and compare it on held-out traffic with every baseline (:mod:`experiments.scoring`).

A run directory holds: ``config.yaml`` (resolved), ``model.zip`` (SB3) or ``model.pt``
(gradient learner), ``metrics.json`` (training curve, wall time, final table), ``eval.json``
(the comparison table; rewritten by `rlte eval`), ``envelope.json`` and ``drift.json`` (the
training traffic's envelope and KS / JS statistics, which an exported policy's drift guard
checks; with ``eval.guard``), ``state.json``
(running, interrupted or finished) and ``tb/`` (TensorBoard logs). While it trains,
``last_model.*`` is its latest checkpoint: a run stopped by a signal keeps it, and
``resume=True`` continues from it.

What the config's settings mean, and which configs are refused, is :mod:`experiments.run_config`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .compare import write_json_atomically
from .data import RunData, extra_held_out, extra_sets, fit_drift_detector, prepare
from .learners import learner
from .progress import Progress, TEWriter, TrainingInterrupted, load_trained, read_state
from .run_config import check_config
from .scoring import evaluate_run, learned_policy, mean_utilization

__all__ = ["TrainingInterrupted", "load_trained", "run_training"]


def resume_point(cfg: DictConfig, run_dir: Path) -> tuple[Path, dict]:
    """The checkpoint and state an unfinished run continues from, or a ValueError saying why there is none."""
    state = read_state(run_dir)
    if state is None:
        raise ValueError(f"{run_dir} has no state.json: it was not made by a version of rlte that can resume it")
    if state["status"] == "finished":
        raise ValueError(f"run {run_dir} finished training; nothing to resume (rlte eval run={run_dir} scores it)")
    checkpoint = run_dir / f"last_{learner(cfg.agent.algorithm).model_file}"
    if not checkpoint.exists():
        raise FileNotFoundError(f"run {run_dir} stopped before its first checkpoint: start it again instead")
    return checkpoint, state


ENVELOPE_FILE = "envelope.json"
DRIFT_FILE = "drift.json"


def write_envelope(run_dir: Path, data: RunData, blocks: int) -> None:
    """The training traffic's envelope (``data.envelope``: fitted when ``eval.guard`` is on and
    the traffic is long enough) as ``envelope.json``, and its KS / JS drift statistics as
    ``drift.json``: what an exported policy's drift guard checks (experiments.export). A file
    this run has no content for is removed (an earlier run may have left one)."""
    detector = fit_drift_detector(data, blocks)
    for name, content in ((ENVELOPE_FILE, data.envelope), (DRIFT_FILE, detector)):
        path = run_dir / name
        if content is None:
            path.unlink(missing_ok=True)
        else:
            write_json_atomically(path, json.dumps(content.to_dict()))


def run_training(cfg: DictConfig, run_dir: Path, *, resume: bool = False) -> dict:
    """Train ``cfg``'s agent into ``run_dir`` and score it; ``resume``: continue the unfinished
    run in ``run_dir`` (made with this ``cfg``) from its latest checkpoint."""
    import torch
    from threadpoolctl import threadpool_limits

    check_config(cfg)
    kind = learner(cfg.agent.algorithm)
    torch.set_num_threads(cfg.threads)
    # BLAS and OpenMP pools were sized to every core when numpy and torch were imported: cap them
    # too, so jobs a launcher runs side by side (hydra/launcher=joblib) do not oversubscribe the cores
    threadpool_limits(cfg.threads)
    started = time.perf_counter()
    checkpoint, state = resume_point(cfg, run_dir) if resume else (None, None)
    # Everything that can refuse the config runs before anything is written, so bad traffic,
    # topology, environment or agent settings leave the directory as it was
    data = prepare(cfg)
    prepare_s = time.perf_counter() - started
    # agent.also_train_on's topologies, loaded once: trained on and scored on their held-out
    # traffic too. Path selection routes one matrix per episode, so it needs no history before it.
    extra = extra_sets(cfg.agent.also_train_on or (), cfg.paths, cfg.env.get("history", 0), cfg.seed)
    trainer = kind.trainer(cfg, data, run_dir, extra, resume=checkpoint)
    also = extra_held_out(extra) if cfg.eval.periodic_also_train_on else []
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    writer = TEWriter(run_dir / "tb" / "te")
    progress = Progress(cfg, data, writer, run_dir, also=also, resumed=state)
    try:
        with progress.stopping_on_signals():
            model = trainer(progress)
    except TrainingInterrupted:
        writer.close()
        raise
    train_s = progress.elapsed()
    write_envelope(run_dir, data, cfg.eval.guard_blocks)
    report, table = evaluate_run(cfg, data, model, run_dir)
    utilization = None
    if kind.env_kind == "split_routing":
        utilization = mean_utilization(data, learned_policy(cfg, data, model), data.test.indices(cfg.eval.every))
    step = progress.curve[-1]["step"]
    writer.figures(step, data, table, utilization)
    own = report["policies"][cfg.agent.name]["summary"]
    writer.hparams(cfg, {"heldout_normalized_mlu_median": own["median"], "heldout_normalized_mlu_p90": own["p90"],
                         "heldout_normalized_mlu_max": own["max"], "train_seconds": train_s,
                         "validation_normalized_mlu_median": (progress.selected or {}).get("validation_median")},
                   step)
    writer.close()
    metrics = {"agent": cfg.agent.name, "topology": data.topology.name, "seed": cfg.seed,
               "device": str(kind.device(cfg)), "prepare_seconds": prepare_s, "train_seconds": train_s,
               "other_topologies_scoring_seconds": progress.others_seconds,
               "seconds_to_heldout_median_1.10": progress.seconds_to_target, "curve": progress.curve,
               "selected_checkpoint": progress.selected,
               "final": {name: p["summary"] for name, p in report["policies"].items()}}
    write_json_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    progress.write_state("finished", progress.curve[-1]["step"])
    return metrics
