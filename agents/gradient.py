"""A learner that optimizes MLU directly through the differentiable torch twin (as DOTE does):
an MLP maps the last ``history`` traffic matrices (scale-free, as the split-routing
environment encodes them) to split ratios for the next one, trained to minimise
MLU(next matrix under those ratios) ÷ its optimal MLU. No reward sampling, no critic: the
twin's gradient says which paths to unload. It is the strong learned reference that PPO
is compared with.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from envs.twin_torch import TorchFluidTwin
from topologies import PathSet

from .device import module_device


def mlp(inputs: int, outputs: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


def save_network(path: str | Path, net: nn.Module, **shape) -> None:
    """``net``'s weights, its class name and the shape parameters that rebuild it."""
    torch.save({"kind": type(net).__name__, "state_dict": net.state_dict(), **shape}, path)


def load_network(cls: type[nn.Module], path: str | Path, shape: Sequence[str], *leading) -> nn.Module:
    """A ``cls`` network rebuilt from :func:`save_network`'s file (``leading`` arguments first,
    then the saved ``shape`` parameters in order), or a ValueError saying what the file is not.
    (Files written before the class name was saved load as whichever class asks.)"""
    name = cls.__name__
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")  # trained on a GPU or not
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:  # torch's reports of a file that is no checkpoint
        raise ValueError(f"{path}: not a saved {name} (torch cannot read it: {type(exc).__name__})") from exc
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a saved {name} (it holds a {type(saved).__name__})")
    if saved.get("kind", name) != name:
        raise ValueError(f"{path}: not a saved {name} (a saved {saved['kind']})")
    missing = [key for key in ("state_dict", *shape) if key not in saved]
    if missing:
        raise ValueError(f"{path}: not a saved {name} (missing {', '.join(missing)})")
    net = cls(*leading, *(saved[key] for key in shape))
    try:
        net.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:  # shapes that do not fit: another path set, for a per-topology network
        raise ValueError(f"{path}: its weights do not fit this {name} ({exc})") from exc
    return net


def window_features(demands: torch.Tensor) -> torch.Tensor:
    """(B, h, P) pair demands -> (B, h·P), each window divided by its largest demand."""
    peak = demands.flatten(1).amax(dim=1, keepdim=True).clamp_min(torch.finfo(demands.dtype).tiny)
    return demands.flatten(1) / peak


class SplitRatioNet(nn.Module):
    """History of pair demands -> split ratios (masked softmax over each pair's paths)."""

    def __init__(self, pathset: PathSet, history: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.history, self.num_pairs, self.k = history, pathset.num_pairs, pathset.k
        self.hidden = tuple(hidden)
        self.body = mlp(history * pathset.num_pairs, pathset.num_slots, hidden)
        self.register_buffer("mask", torch.as_tensor(np.array(pathset.mask)))

    def forward(self, demands: torch.Tensor) -> torch.Tensor:
        logits = self.body(window_features(demands)).view(-1, self.num_pairs, self.k)
        return torch.softmax(logits.masked_fill(~self.mask, float("-inf")), dim=-1)

    def save(self, path: str | Path) -> None:
        """Weights plus the shape parameters :meth:`load` needs to rebuild the network."""
        save_network(path, self, history=self.history, hidden=list(self.hidden))

    @classmethod
    def load(cls, pathset: PathSet, path: str | Path) -> "SplitRatioNet":
        """The network saved at ``path``, for ``pathset`` (the one it was trained on)."""
        return load_network(cls, path, ("history", "hidden"), pathset)


@dataclass
class DemandHistoryPolicy:
    """A torch network that maps the last ``history`` pair-demand vectors (B, h, P) to split
    ratios (B, P, K), behind the RoutingPolicy interface; ``history`` is the network's own.
    Subclasses say how the network is called in :meth:`_ratios`."""

    pathset: PathSet
    net: nn.Module
    name: str
    clairvoyant: bool = False
    history: int = field(init=False)

    def __post_init__(self) -> None:
        self.history = self.net.history
        self.net.eval()

    @property
    def device(self) -> torch.device:
        """Where the network is: its inputs go there, its ratios come back to the CPU."""
        return module_device(self.net)

    def _ratios(self, demands: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def route(self, history: np.ndarray) -> np.ndarray:
        demands = torch.as_tensor(self.pathset.demands(history[-self.history:]), dtype=torch.float32,
                                  device=self.device)
        return self._ratios(demands[None])[0].double().cpu().numpy()

    @torch.no_grad()
    def route_batch(self, windows: np.ndarray) -> np.ndarray:
        """(B, h, N, N) -> (B, P, K): many decisions in one forward pass."""
        demands = torch.as_tensor(self.pathset.demands(windows), dtype=torch.float32, device=self.device)
        return self._ratios(demands).double().cpu().numpy()


@dataclass
class GradientPolicy(DemandHistoryPolicy):
    """A trained :class:`SplitRatioNet` behind the RoutingPolicy interface."""

    net: SplitRatioNet
    name: str = "gradient"

    def _ratios(self, demands: torch.Tensor) -> torch.Tensor:
        return self.net(demands)


@dataclass
class GradientSettings:
    history: int = 3
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    # Loss = MLU ÷ optimum, plus ``spread`` × (p-norm of link utilizations ÷ optimum): the
    # p-norm term keeps the second-busiest links low too, so the routing leaves headroom for
    # the next matrix's changes (what the LP's "balanced" tie-break does for LP-previous).
    spread: float = 0.0
    spread_p: float = 8.0


@dataclass
class TrainingState:
    """What continues a stopped training where it stopped: the network's weights, the
    optimizer's and the learning-rate schedule's state, the batch order's random generator,
    and the losses of the ``epoch`` epochs done (:func:`train_gradient`, :func:`agents.gnn.train_gnn`)."""

    epoch: int
    net: dict
    optimizer: dict
    generator: torch.Tensor
    losses: list[float]
    schedule: dict | None = None

    @classmethod
    def of(cls, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
           losses: list[float], schedule: torch.optim.lr_scheduler.LRScheduler | None = None) -> "TrainingState":
        return cls(epoch, net.state_dict(), optimizer.state_dict(), generator.get_state(), list(losses),
                   schedule.state_dict() if schedule is not None else None)

    def restore(self, net: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                schedule: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        net.load_state_dict(self.net)
        optimizer.load_state_dict(self.optimizer)
        generator.set_state(self.generator)
        if schedule is not None and self.schedule is not None:
            schedule.load_state_dict(self.schedule)

    def save(self, path: str | Path) -> None:
        torch.save(vars(self), path)

    @classmethod
    def load(cls, path: str | Path) -> "TrainingState":
        try:
            return cls(**torch.load(path, weights_only=False, map_location="cpu"))
        except (OSError, pickle.UnpicklingError, TypeError, RuntimeError, EOFError) as exc:
            raise ValueError(f"{path} is not a training state saved by rlte: {exc}") from None


# on_epoch(epoch, loss, net, state): after each epoch; state() is the TrainingState that continues from it
EpochCallback = Callable[[int, float, nn.Module, Callable[[], TrainingState]], None]


def normalized_mlu_loss(utilization: torch.Tensor, optimum: torch.Tensor, spread: float = 0.0,
                        spread_p: float = 8.0) -> torch.Tensor:
    """Mean over the batch of MLU ÷ optimum, for (B, E) link utilizations and (B,) optima; plus
    ``spread`` × the p-norm of the utilizations ÷ optimum (see :class:`GradientSettings`)."""
    loss = (utilization.amax(dim=1) / optimum).mean()
    if spread:
        loss = loss + spread * (utilization.pow(spread_p).mean(dim=1).pow(1 / spread_p) / optimum).mean()
    return loss


def training_samples(pathset: PathSet, matrices: np.ndarray, optimal_mlu: np.ndarray, history: int,
                     device: str | torch.device = "cpu"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked training data as tensors on ``device``: pair demands (T, P), optima (T,), and
    the samples: target matrices t = h..T-1 (S,) with their windows t-h..t-1 (S, h)."""
    if history < 1:
        raise ValueError(f"history must be >= 1, got {history}")
    matrices, optimal_mlu = np.asarray(matrices), np.asarray(optimal_mlu, dtype=np.float64)
    if len(matrices) != len(optimal_mlu):
        raise ValueError(f"{len(matrices)} matrices but {len(optimal_mlu)} optimal MLU values")
    if len(matrices) <= history:
        raise ValueError(f"{len(matrices)} matrices are too few for history {history}")
    targets = torch.arange(history, len(matrices), device=device)
    return (torch.as_tensor(pathset.demands(matrices), dtype=torch.float32, device=device),
            torch.as_tensor(optimal_mlu, dtype=torch.float32, device=device),
            targets, targets[:, None] + torch.arange(-history, 0, device=device)[None, :])


def train_gradient(
    pathset: PathSet,
    matrices: np.ndarray,
    optimal_mlu: np.ndarray,
    settings: GradientSettings = GradientSettings(),
    *,
    on_epoch: EpochCallback | None = None,
    resume: TrainingState | None = None,
    device: str | torch.device = "cpu",
) -> tuple[GradientPolicy, list[float]]:
    """Train on consecutive ``matrices`` (T, N, N) whose optima are ``optimal_mlu`` (T,).

    Samples are windows t-h..t-1 -> matrix t. Returns the policy and the mean training loss
    (normalized MLU) of every epoch. ``on_epoch`` is called after each (as
    :func:`agents.gnn.train_gnn` calls it); ``resume`` continues a training from its state.
    The network, the twin and the data live on ``device`` (the policy returned too); the batch
    order is drawn on the CPU, so a seed orders batches alike on every device.
    """
    h = settings.history
    demands, optimum, targets, windows = training_samples(pathset, matrices, optimal_mlu, h, device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net = SplitRatioNet(pathset, h, settings.hidden).to(device)
    twin = TorchFluidTwin(pathset, device=device, dtype=torch.float32)
    capacities = torch.as_tensor(np.array(pathset.topology.capacities), dtype=torch.float32, device=device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    policy = GradientPolicy(pathset, net)
    if resume is not None:
        resume.restore(net, optimizer, generator)
    losses = list(resume.losses) if resume is not None else []
    for epoch in range(resume.epoch if resume is not None else 0, settings.epochs):
        net.train()
        order = torch.randperm(len(targets), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            ratios = net(demands[windows[batch]])
            utilization = twin.link_loads(None, ratios, demands=demands[targets[batch]]) / capacities
            loss = normalized_mlu_loss(utilization, optimum[targets[batch]], settings.spread, settings.spread_p)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(order))
        net.eval()
        if on_epoch:
            on_epoch(epoch, losses[-1], net, lambda: TrainingState.of(epoch + 1, net, optimizer, generator, losses))
    return policy, losses

