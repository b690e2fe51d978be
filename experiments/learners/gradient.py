"""``agent.algorithm=gradient``: split ratios learnt through the differentiable twin (no
reward sampling): agents.gradient's MLP (``agent.policy=mlp``) or agents.gnn's LinkGNN
(``graph``), trained epoch by epoch on the run's training matrices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, List

from omegaconf import MISSING, DictConfig

from experiments.schema import AgentConfig

from . import Learner, Trainer, register

if TYPE_CHECKING:
    from agents.gnn import TrainingSet
    from experiments.data import ExtraEntry, RunData
    from experiments.progress import Progress

RESUME_STATE = "resume_state.pt"  # the optimizer's and schedule's state beside last_model.pt


@dataclass
class GradientConfig(AgentConfig):
    MINIMUMS = {"epochs": 1, "batch_size": 1}
    algorithm: str = "gradient"
    epochs: int = MISSING
    batch_size: int = 32
    learning_rate: float = 0.001
    weight_decay: float = 0.01


@dataclass
class GradientMLPConfig(GradientConfig):
    hidden: List[int] = field(default_factory=lambda: [128, 128])
    spread: float = 0.0    # weight of the p-norm term of the loss (agents.gradient.GradientSettings)
    spread_p: float = 8.0


@dataclass
class GradientGNNConfig(GradientConfig):
    MINIMUMS = {"hidden": 1, "layers": 1, "rounds": 0}
    policy: str = "graph"
    hidden: int = 64
    layers: int = 3
    rounds: int = 5        # cost refinements through the twin inside the network
    max_grad_norm: float = 1.0


@register
class GradientLearner(Learner):
    algorithm = "gradient"
    env_kind = "split_routing"
    model_file = "model.pt"
    schemas = {"mlp": GradientMLPConfig, "graph": GradientGNNConfig}

    def gpu_pays(self, cfg: DictConfig) -> bool:
        """The graph network: every batch of matrices passes messages over every link and routes
        through the twin, all on the device. The MLP's few small products gain nothing there."""
        return cfg.agent.policy == "graph"

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        if cfg.env.spread_weight > 0:
            raise ValueError("env.spread_weight shapes the environment's reward, and agent.algorithm=gradient does "
                             "not learn from it (it follows the twin's MLU gradient); leave it at 0")

    def trainer(self, cfg: DictConfig, data: RunData, run_dir: Path,
                extra: Sequence[tuple[ExtraEntry, TrainingSet]] = (), resume: Path | None = None) -> Trainer:
        import torch
        from tqdm import tqdm

        from agents.gradient import TrainingState

        agent = cfg.agent
        device = self.device(cfg)
        every = max(1, cfg.eval.periodic_every // 1000)  # epochs between held-out scores
        common = {"history": cfg.env.history, "epochs": agent.epochs, "batch_size": agent.batch_size,
                  "learning_rate": agent.learning_rate, "weight_decay": agent.weight_decay, "seed": cfg.seed}
        state = TrainingState.load(resume.with_name(RESUME_STATE)) if resume is not None else None
        torch.manual_seed(cfg.seed)
        if agent.policy == "graph":
            from agents.gnn import GNNSettings, LinkGNN, TrainingSet, train_gnn

            settings = GNNSettings(**common, hidden=agent.hidden, layers=agent.layers, rounds=agent.rounds,
                                   max_grad_norm=agent.max_grad_norm)
            untrained = LinkGNN(settings.history, settings.hidden, settings.layers, settings.rounds)
            sets = [TrainingSet(data.pathset, data.train.matrices, data.train_optimum),
                    *(trained for _, trained in extra)]

            def fit(on_epoch):
                return train_gnn(sets, settings, on_epoch=on_epoch, resume=state, device=device)[0]
        else:
            from agents.gradient import GradientSettings, SplitRatioNet, train_gradient

            settings = GradientSettings(**common, hidden=tuple(agent.hidden), spread=agent.spread,
                                        spread_p=agent.spread_p)
            untrained = SplitRatioNet(data.pathset, settings.history, settings.hidden)

            def fit(on_epoch):
                return train_gradient(data.pathset, data.train.matrices, data.train_optimum, settings,
                                      on_epoch=on_epoch, resume=state, device=device)[0].net

        def train(progress: Progress):
            done = state.epoch if state is not None else 0
            bar = tqdm(total=agent.epochs, initial=done, desc="gradient epochs", unit="epoch",
                       disable=not progress.interactive)

            def on_epoch(epoch: int, loss: float, net, training_state) -> None:
                stopping = progress.stop_requested  # read once: a signal from here on is the next epoch's
                progress.writer.writer.add_scalar("train/normalized_mlu", loss, epoch + 1)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if (epoch + 1) % every == 0 or epoch + 1 == agent.epochs or stopping:
                    progress.checkpoint(epoch + 1, net, save_state=lambda directory: training_state().save(
                        directory / RESUME_STATE))
                progress.log(epoch + 1, agent.epochs, "epochs", loss=loss)
                if stopping:
                    progress.stop(epoch + 1)

            if state is None:
                progress.checkpoint(0, untrained)
            try:
                net = fit(on_epoch)
            finally:
                bar.close()
            return progress.kept(net)

        return train

    def load(self, cfg: DictConfig, data: RunData, path: Path) -> Any:
        if cfg.agent.policy == "graph":
            from agents.gnn import LinkGNN

            return LinkGNN.load(path)
        from agents.gradient import SplitRatioNet

        return SplitRatioNet.load(data.pathset, path)

    def routing_policy(self, cfg: DictConfig, data: RunData, model: Any):
        if cfg.agent.policy == "graph":
            from agents.gnn import GNNPolicy

            return GNNPolicy(data.pathset, model, name=cfg.agent.name)
        from agents.gradient import GradientPolicy

        return GradientPolicy(data.pathset, model, name=cfg.agent.name)

    def export_module(self, cfg: DictConfig, data: RunData, model: Any):
        """The MLP (SplitRatioNet) maps the demand history to ratios itself; the graph network
        (LinkGNN) with its refinement rounds routes on the run's path set (experiments.export.DenseLinkGNN)."""
        if cfg.agent.policy == "graph":
            from experiments.export import DenseLinkGNN

            return DenseLinkGNN(model, data.pathset).eval()
        return model.eval()
