"""What a run writes to TensorBoard beside its curves: its settings and final metrics for the
HParams dashboard (a sweep sorted by normalized MLU there), and every table `rlte eval` scores."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from experiments import compose, train_config
from experiments.progress import hyperparameters
from tests.support import ROOT, rlte

TINY = ("agent=gradient", "agent.epochs=2", "agent.hidden=[8]", "topology=b4", "traffic=b4-real", "eval.every=3",
        "eval.periodic_every=1", "eval.validation=6")  # validation scored every epoch: it picks the checkpoint


def events(log_dir) -> EventAccumulator:
    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def last_scalar(accumulator: EventAccumulator, tag: str) -> tuple[int, float]:
    event = accumulator.Scalars(tag)[-1]
    return event.step, event.value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_config(compose(*TINY), tmp_path_factory.mktemp("tb") / "run")


def test_a_run_logs_its_settings_and_final_metrics_for_the_hparams_dashboard(run):
    log = events(run.directory / "tb" / "te")
    content = log.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    logged = session.session_start_info.hparams
    cfg = run.config
    assert logged["agent.learning_rate"].number_value == pytest.approx(cfg.agent.learning_rate)
    assert logged["seed"].number_value == cfg.seed and logged["topology"].string_value == "b4"
    assert json.loads(logged["agent.hidden"].string_value) == [8]  # lists as text: HParams takes scalars
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {info.name.tag for info in experiment.metric_infos} >= {"hparams/heldout_normalized_mlu_median",
                                                                  "hparams/validation_normalized_mlu_median"}
    summary = json.loads((run.directory / "eval.json").read_text())["policies"][cfg.agent.name]["summary"]
    assert last_scalar(log, "hparams/heldout_normalized_mlu_median")[1] == pytest.approx(summary["median"], rel=1e-6)
    assert last_scalar(log, "hparams/heldout_normalized_mlu_p90")[1] == pytest.approx(summary["p90"], rel=1e-6)
    selected = json.loads((run.directory / "metrics.json").read_text())["selected_checkpoint"]
    assert last_scalar(log, "hparams/validation_normalized_mlu_median")[1] == pytest.approx(
        selected["validation_median"], rel=1e-6)


def test_hyperparameters_are_flat_scalars_of_the_agent_and_environment():
    cfg = compose("agent=gradient_gnn", "topology=b4", "traffic=b4-real", "seed=7")
    flat = hyperparameters(cfg)
    assert flat["seed"] == 7 and flat["traffic"] == "b4-real" and flat["env.history"] == cfg.env.history
    assert all(isinstance(value, (bool, int, float, str)) for value in flat.values())
    assert {key.split(".")[0] for key in flat} == {"seed", "paths", "topology", "traffic", "agent", "env"}
    assert len([key for key in flat if key.startswith("agent.")]) == len(OmegaConf.to_container(cfg.agent))


def test_every_table_rlte_eval_scores_lands_in_the_runs_log_one_step_after_the_last(run):
    log_dir = run.directory / "tb" / "eval"
    name = run.config.agent.name
    tag = f"eval/twin/b4/b4-real/{name}/normalized_mlu_median"
    assert last_scalar(events(log_dir), tag)[0] == 0  # the table rlte train scored at the end
    result = rlte("eval", f"run={run.directory}", "eval.every=6", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run.directory / "eval.json").read_text())["policies"]
    step, median = last_scalar(events(log_dir), tag)
    assert step == 1 and median == pytest.approx(summary[name]["summary"]["median"], rel=1e-6)
    baseline = next(policy for policy in summary if policy != name)
    assert last_scalar(events(log_dir), f"eval/twin/b4/b4-real/{baseline}/normalized_mlu_max")[1] == pytest.approx(
        summary[baseline]["summary"]["max"], rel=1e-6)
