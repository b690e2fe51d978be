"""A training run's progress: periodic held-out scores (TensorBoard, time to target, which
checkpoint to keep), the resume point it saves beside them, the run's ``state.json``
(running, interrupted or finished), and a stop requested by a signal."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agents.evaluation import PolicyScores

from .compare import write_json_atomically
from .data import RunData, ScoredSequence
from .learners import learner
from .plotting import cdf_figure, topology_figure
from .scoring import score

TARGET_NORMALIZED_MLU = 1.10  # training wall time is reported to first reach this held-out median
STATE_FILE = "state.json"
LOG_EVERY_S = 30.0  # without a terminal, a progress line this often


class TrainingInterrupted(Exception):
    """Training stopped on a signal; the run directory holds its resume point."""

    def __init__(self, run_dir: Path, step: int, total: int, unit: str, reason: str) -> None:
        super().__init__(f"{reason}: training stopped at {step:,} of {total:,} {unit}; its latest checkpoint is "
                         f"kept in {run_dir} (rlte eval scores it; rlte train resume={run_dir} continues it)")
        self.reason = reason


class TEWriter:
    """Traffic-engineering metrics and figures, beside SB3's own scalars."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def scores(self, step: int, scores: PolicyScores, topology: str | None = None) -> None:
        """Held-out scores at ``step``: the run's own (``heldout/...``) or, for a several-topology
        run, another topology's it trains on (``heldout/<topology>/...``)."""
        prefix = "heldout" if topology is None else f"heldout/{topology}"
        x = scores.normalized_mlu
        for key, value in (("mean", x.mean()), ("median", np.median(x)), ("p90", np.percentile(x, 90))):
            self.writer.add_scalar(f"{prefix}/normalized_mlu_{key}", float(value), step)
        if scores.drop_fraction is not None:
            self.writer.add_scalar(f"{prefix}/drop_fraction", float(scores.drop_fraction.mean()), step)
            self.writer.add_scalar(f"{prefix}/throughput_fraction", float(1 - scores.drop_fraction.mean()), step)
        self.writer.flush()

    def validation(self, step: int, median: float) -> None:
        self.writer.add_scalar("validation/normalized_mlu_median", median, step)

    def figures(self, step: int, data: RunData, table: dict[str, PolicyScores], utilization: np.ndarray | None) -> None:
        import matplotlib.pyplot as plt

        figure = cdf_figure({name: s.normalized_mlu for name, s in table.items()})
        self.writer.add_figure("heldout/normalized_mlu_cdf", figure, step)
        plt.close(figure)
        if utilization is not None:
            figure = topology_figure(data.topology, link_values=utilization, value_label="mean link utilization")
            self.writer.add_figure("heldout/link_utilization", figure, step)
            plt.close(figure)
        self.writer.flush()

    def hparams(self, cfg: DictConfig, metrics: dict[str, float | None], step: int) -> None:
        """The run's settings (:func:`hyperparameters`) and final ``metrics`` for TensorBoard's
        HParams dashboard, in this run's own log directory: a sweep opened as one log directory
        lists its runs there, sortable by any metric. Metrics appear as ``hparams/<name>``."""
        from torch.utils.tensorboard.summary import hparams

        values = {f"hparams/{name}": float(value) for name, value in metrics.items()
                  if value is not None and np.isfinite(value)}
        for summary in hparams(hyperparameters(cfg), values):
            self.writer.file_writer.add_summary(summary)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def table(self, prefix: str, table: dict[str, PolicyScores], step: int = 0) -> None:
        """A scored table (every policy's normalized MLU median, p90 and max) as scalars under
        ``prefix/<policy>/``: ``rlte eval`` adds each table it scores to the run's log."""
        for name, scores in table.items():
            x = scores.normalized_mlu
            for key, value in (("median", np.median(x)), ("p90", np.percentile(x, 90)), ("max", x.max())):
                self.writer.add_scalar(f"{prefix}/{name}/normalized_mlu_{key}", float(value), step)
            if scores.drop_fraction is not None:
                self.writer.add_scalar(f"{prefix}/{name}/drop_fraction", float(scores.drop_fraction.mean()), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def hyperparameters(cfg: DictConfig) -> dict[str, str | int | float | bool]:
    """What distinguishes one run of a sweep from another, flat, as HParams takes it: the
    agent's and the environment's settings (``agent.lr``, ``env.history``, ...), the seed, path
    count, topology and traffic; lists and missing values as text."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {"seed": container["seed"], "paths": container["paths"],
                            "topology": container["topology"]["name"], "traffic": container["traffic"]["name"]}
    for group in ("agent", "env"):
        for key, value in (container.get(group) or {}).items():
            flat[f"{group}.{key}"] = value
    return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in flat.items()}


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's ``state.json`` (None for a run made before runs kept one)."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); the run's state is unknown") from None
    if not isinstance(state, dict) or state.get("status") not in ("running", "interrupted", "finished"):
        raise ValueError(f"{path} is not a run state written by rlte")
    return state


class Progress:
    """Periodic scores during training: the held-out curve (TensorBoard, time to target) and,
    when the run has a validation sequence, which checkpoint to keep. The held-out matrices
    are only watched; only the validation ones (cut from the training sequence) choose.
    ``also``: (label, data) of the other topologies a several-topology run trains on, whose
    held-out matrices are scored beside the run's own (watched too, never choosing).

    Every score also saves the latest model as the run's resume point (``last_<model file>``)
    and writes ``state.json``; ``resumed``: that state, to continue an interrupted run's curve."""

    def __init__(self, cfg: DictConfig, data: RunData, writer: TEWriter, run_dir: Path,
                 also: Sequence[tuple[str, RunData]] = (), resumed: dict[str, Any] | None = None) -> None:
        self.cfg, self.data, self.writer, self.run_dir = cfg, data, writer, run_dir
        self.kind = learner(cfg.agent.algorithm)
        self.path = run_dir / self.kind.model_file  # where the kept checkpoint goes
        self.last_path = run_dir / f"last_{self.kind.model_file}"  # the resume point
        self.total, self.unit = (cfg.agent.epochs, "epochs") if "epochs" in cfg.agent else \
            (cfg.agent.total_timesteps, "steps")
        limit = cfg.eval.periodic_matrices
        self.indices = data.test.indices(cfg.eval.every, limit=limit)
        self.also = [(label, other, other.test.indices(cfg.eval.every, limit=limit)) for label, other in also]
        self.validation_indices = data.validation.indices(1, limit=limit) if data.validation else None
        before = resumed or {}
        self.start = time.perf_counter() - before.get("seconds", 0.0)
        self.others_seconds = before.get("others_seconds", 0.0)  # spent scoring the other topologies
        self.curve: list[dict[str, Any]] = before.get("curve", [])  # step, seconds, median, p90, ...
        self.seconds_to_target: float | None = before.get("seconds_to_target")
        self.selected: dict[str, float] | None = before.get("selected")  # the best checkpoint on validation so far
        self.interactive = sys.stdout.isatty()  # progress bars on a terminal, log lines elsewhere
        self.stop_requested: str | None = None  # the signal's name, once one asks training to stop
        self._logged = time.perf_counter()

    @property
    def selects(self) -> bool:
        return self.validation_indices is not None

    def _median(self, model, sequence: ScoredSequence, indices: np.ndarray,
                data: RunData | None = None) -> tuple[PolicyScores, float]:
        scores = score(self.cfg, data or self.data, model, sequence, indices, baselines=False)[self.cfg.agent.name]
        return scores, float(np.median(scores.normalized_mlu))

    def elapsed(self) -> float:
        """Seconds of training, less those spent scoring the other topologies (so a several-topology
        run's training time and time to target count what a one-topology run's do)."""
        return time.perf_counter() - self.start - self.others_seconds

    def _score_others(self, step: int, model) -> dict[str, dict[str, float]]:
        started, points = time.perf_counter(), {}
        for label, other, indices in self.also:
            scores, median = self._median(model, other.test, indices, other)
            self.writer.scores(step, scores, topology=label)
            points[label] = {"median": median, "p90": float(np.percentile(scores.normalized_mlu, 90))}
        self.others_seconds += time.perf_counter() - started
        return points

    def __call__(self, step: int, model) -> bool:
        """Score ``model`` at ``step``; True when it is the best on validation so far (keep it)."""
        scores, median = self._median(model, self.data.test, self.indices)
        self.writer.scores(step, scores)
        elapsed = self.elapsed()
        point = {"step": step, "seconds": elapsed, "median": median,
                 "p90": float(np.percentile(scores.normalized_mlu, 90))}
        if self.seconds_to_target is None and median <= TARGET_NORMALIZED_MLU:
            self.seconds_to_target = elapsed
        if self.also:
            point["other_topologies"] = self._score_others(step, model)
        best = False
        if self.selects:
            _, point["validation_median"] = self._median(model, self.data.validation, self.validation_indices)
            self.writer.validation(step, point["validation_median"])
            best = self.selected is None or point["validation_median"] < self.selected["validation_median"]
            if best:
                self.selected = {"step": step, "validation_median": point["validation_median"], "median": median}
        self.curve.append(point)
        return best

    # Models are SB3 algorithms, agents.gradient.SplitRatioNet or agents.gnn.LinkGNN: all have save(path).
    def checkpoint(self, step: int, model, save_state: Callable[[Path], None] | None = None) -> None:
        """Score ``model`` at ``step``; save it as the run's model when validation says it is the
        best so far, and always as the resume point (with ``save_state``'s extra state)."""
        if self(step, model):
            model.save(self.path)
        model.save(self.last_path)
        if save_state is not None:
            save_state(self.run_dir)
        self.write_state("running", step)

    def kept(self, last):
        """The model a finished run keeps: the ``last`` one without validation, else the best on
        validation (already saved; the last stays beside it as last_<name>)."""
        if not self.selects:
            last.save(self.path)
            self.last_path.unlink(missing_ok=True)  # the same model twice
            return last
        last.save(self.last_path)
        return self.kind.load(self.cfg, self.data, self.path)

    def write_state(self, status: str, step: int, reason: str | None = None) -> None:
        state = {"status": status, "step": step, "total": self.total, "unit": self.unit, "reason": reason,
                 "seconds": self.elapsed(), "others_seconds": self.others_seconds, "curve": self.curve,
                 "seconds_to_target": self.seconds_to_target, "selected": self.selected}
        write_json_atomically(self.run_dir / STATE_FILE, json.dumps(state, indent=1))

    def log(self, step: int, total: int, unit: str, **values: float) -> None:
        """Without a terminal (CI, nohup, a pipe) the bars stay quiet: a line every LOG_EVERY_S instead."""
        if self.interactive or time.perf_counter() - self._logged < LOG_EVERY_S:
            return
        self._logged = time.perf_counter()
        latest = self.curve[-1] if self.curve else None
        parts = [f"{self.cfg.agent.name}: {step:,}/{total:,} {unit}", f"{self.elapsed():.0f} s"]
        parts += [f"{key} {value:.4f}" for key, value in values.items()]
        if latest is not None:
            parts.append(f"held-out median {latest['median']:.3f} at {latest['step']:,}")
        print(" · ".join(parts), flush=True)

    def stop(self, step: int) -> None:
        """Stop training after a signal, once the caller has checkpointed ``step`` (the resume point)."""
        self.write_state("interrupted", step, self.stop_requested)
        raise TrainingInterrupted(self.run_dir, step, self.total, self.unit, self.stop_requested or "stopped")

    @contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT (Ctrl-C) ask training to stop at its next step, keeping a resume
        point; a second one stops at once. Outside the main thread (a launcher's worker) the
        handlers cannot be set, and signals keep their default meaning."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request(signum: int, _frame) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = signal.Signals(signum).name

        previous = {signum: signal.signal(signum, request) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def unfinished(run_dir: Path) -> str | None:
    """Why a run directory holds no finished run, in words (None: it finished, or predates state.json)."""
    state = read_state(run_dir)
    if state is None or state["status"] == "finished":
        return None
    what = "was interrupted" if state["status"] == "interrupted" else "did not finish (or is still running)"
    reason = f" by {state['reason']}" if state.get("reason") else ""
    return f"run {run_dir} {what}{reason} at {state['step']:,} of {state['total']:,} {state['unit']}"


def load_trained(cfg: DictConfig, data: RunData, run_dir: Path):
    """The model a run kept: its kind's file in ``run_dir``; for a run that did not finish
    (:func:`unfinished`), the latest checkpoint it saved."""
    kind = learner(cfg.agent.algorithm)
    path = run_dir / kind.model_file
    if (why := unfinished(run_dir)) is not None:
        path = run_dir / f"last_{kind.model_file}"
        if not path.exists():
            raise FileNotFoundError(f"{why}, before it saved a checkpoint: nothing to score "
                                    f"(rlte train resume={run_dir} continues it)")
    if not path.exists():
        raise FileNotFoundError(f"run {run_dir} has no model ({path.name}): it did not finish training")
    return kind.load(cfg, data, path)
