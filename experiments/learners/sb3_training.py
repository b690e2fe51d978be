"""What the Stable-Baselines3 kinds share (:mod:`.ppo`, :mod:`.dqn`): their config's common
settings, the vectorized training environments, and the training loop that scores
checkpoints through Progress, saves a resume point and stops cleanly on a signal."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

from omegaconf import MISSING, DictConfig, OmegaConf

from experiments.schema import AgentConfig

from . import Learner, Trainer

if TYPE_CHECKING:
    from agents.gnn import TrainingSet
    from experiments.data import ExtraEntry, RunData
    from experiments.progress import Progress


@dataclass
class SB3Config(AgentConfig):
    MINIMUMS = {"total_timesteps": 1}
    total_timesteps: int = MISSING
    net_arch: List[int] = field(default_factory=list)   # the MLP's hidden widths (DQN graph: the per-path scorer's)
    policy_options: Dict[str, Any] = field(default_factory=dict)   # the SB3 policy's keyword arguments
    hyperparameters: Dict[str, Any] = field(default_factory=dict)  # the SB3 algorithm's keyword arguments


class SB3Learner(Learner):
    """A kind trained by an SB3 algorithm; subclasses say how its environments are wrapped."""

    model_file = "model.zip"

    def policy_options(self, cfg: DictConfig) -> dict[str, Any]:
        """The SB3 policy's keyword arguments (``agent.policy_options``)."""
        return OmegaConf.to_container(cfg.agent.policy_options)

    def wrapper(self, cfg: DictConfig) -> Callable | None:
        """What wraps each training environment (None: the plain one)."""
        return None

    def callbacks(self, cfg: DictConfig) -> list:
        """More SB3 callbacks for training."""
        return []

    def model_options(self, cfg: DictConfig) -> dict[str, Any]:
        """More keyword arguments of ``agents.sb3.make_model`` this kind sets (e.g. PPO's advantage)."""
        return {}

    def make_model(self, cfg: DictConfig, env, run_dir: Path, also_on: Sequence, also_labels: Sequence[str]):
        from agents.sb3 import make_model

        return make_model(self.algorithm, env, OmegaConf.to_container(cfg.agent.hyperparameters),
                          net_arch=list(cfg.agent.net_arch), seed=cfg.seed, tensorboard_log=str(run_dir / "tb"),
                          device=self.device(cfg),
                          policy=cfg.agent.policy, policy_options=self.policy_options(cfg), also_on=also_on,
                          also_labels=also_labels, **self.model_options(cfg))

    def make_vec_env(self, cfg: DictConfig, data: RunData, on: TrainingSet | None = None):
        """The run's vectorized training environments (on ``on``'s topology instead: an
        ``agents.gnn.TrainingSet`` of ``agent.also_train_on``)."""
        from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

        from envs.path_selection import PathSelectionEnv
        from envs.split_routing import SplitRoutingEnv

        vec_class = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[cfg.env.vec_env]
        env_class = SplitRoutingEnv if self.env_kind == "split_routing" else PathSelectionEnv
        return sb3_make_vec_env(env_class, n_envs=cfg.env.n_envs, seed=cfg.seed, wrapper_class=self.wrapper(cfg),
                                vec_env_cls=vec_class, env_kwargs=env_kwargs(cfg, data, on))

    def trainer(self, cfg: DictConfig, data: RunData, run_dir: Path,
                extra: Sequence[tuple[ExtraEntry, TrainingSet]] = (), resume: Path | None = None) -> Trainer:
        from stable_baselines3.common.callbacks import BaseCallback

        envs = [self.make_vec_env(cfg, data)]
        try:
            envs += [self.make_vec_env(cfg, data, trained) for _, trained in extra]
            model = self.make_model(cfg, envs[0], run_dir, envs[1:], [entry.label for entry, _ in extra])
            if resume is not None:  # the weights, optimizer and step count of the interrupted run
                model.set_parameters(str(resume), exact_match=True)
                model.num_timesteps = trained_steps(model, load_timesteps(resume))
        except BaseException:
            for env in envs:
                env.close()
            raise
        every, total = cfg.eval.periodic_every, cfg.agent.total_timesteps
        callbacks = self.callbacks(cfg)

        def train(progress: Progress):
            class Periodic(BaseCallback):
                def __init__(self) -> None:
                    super().__init__()
                    self.next = (model.num_timesteps // every + 1) * every
                    self.stopped = False  # by a signal; the step it stopped at is checkpointed

                def _on_step(self) -> bool:
                    stopping = self.stopped = bool(progress.stop_requested)  # read once: later, the next step's
                    if self.num_timesteps >= self.next or stopping:
                        self.next = (self.num_timesteps // every + 1) * every
                        progress.checkpoint(self.num_timesteps, model)
                    progress.log(self.num_timesteps, total, "steps")
                    return not stopping

            if resume is None:
                progress.checkpoint(0, model)
            remaining, periodic = total - model.num_timesteps, Periodic()
            try:
                if remaining > 0:
                    with warnings.catch_warnings():  # SB3's progress bar is tqdm.rich, which calls itself experimental
                        warnings.filterwarnings("ignore", message="rich is experimental")
                        model.learn(total_timesteps=remaining, callback=[periodic, *callbacks],
                                    progress_bar=progress.interactive, tb_log_name=cfg.agent.name,
                                    reset_num_timesteps=resume is None)
                if periodic.stopped:  # the callback checkpointed the step it stopped at
                    progress.stop(model.num_timesteps)
                if progress.curve[-1]["step"] != model.num_timesteps:  # unless the callback just scored it
                    progress.checkpoint(int(model.num_timesteps), model)
            finally:
                for env in envs:
                    env.close()
            return progress.kept(model)

        return train

    def load(self, cfg: DictConfig, data: RunData, path: Path) -> Any:
        from agents.sb3 import load_model

        return load_model(self.algorithm, str(path))


def load_timesteps(path: Path) -> int:
    """The step count an SB3 model file was saved at."""
    from stable_baselines3.common.save_util import load_from_zip_file

    saved, _, _ = load_from_zip_file(str(path), device="cpu", load_data=True)
    return int(saved["num_timesteps"])


def trained_steps(model, steps: int) -> int:
    """The steps a model saved at ``steps`` learnt from: an on-policy algorithm (PPO) drops a
    rollout cut short by a stop, so it resumes from the last whole rollout."""
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    if isinstance(model, OnPolicyAlgorithm):
        return steps - steps % (model.n_steps * model.n_envs)
    return steps


def env_kwargs(cfg: DictConfig, data: RunData, on: TrainingSet | None = None) -> dict[str, Any]:
    """The environment's arguments: on the run's training data, or on ``on``, another topology's."""
    if on is None:
        common = {"topology": data.topology, "traffic": data.train, "pathset": data.pathset,
                  "optimal_mlu": data.train_optimum}
    else:
        common = {"topology": on.pathset.topology, "traffic": on.matrices, "pathset": on.pathset,
                  "optimal_mlu": on.optimal_mlu}
    env = cfg.env
    if env.kind == "split_routing":
        return {**common, "history": env.history, "reward": env.reward, "spread_weight": env.spread_weight,
                "episode_length": env.episode_length, "action_scale": env.action_scale}
    return {**common, "flows_per_pair": env.flows_per_pair, "bottleneck_weight": env.bottleneck_weight,
            "utilization_norm": env.utilization_norm}
