"""Stable-Baselines3 agents for rlte's environments, laid out as SB3 lays out itself:
building blocks apart from each algorithm's own module, each module one job.

- :mod:`~agents.sb3.layers`: the graph policies' GNN feature extractors and heads.
- :mod:`~agents.sb3.policies`: the graph policies (PPO's :class:`GraphActorCriticPolicy`,
  DQN's :class:`GraphQPolicy`), whose weights fit any topology.
- :mod:`~agents.sb3.buffers`: n-step returns for dict observations (:class:`DictNStepReplayBuffer`).
- :mod:`~agents.sb3.schedules`: hyperparameter schedules and PPO's exploration decay.
- :mod:`~agents.sb3.rotation`: learning on several topologies in turn (:class:`RotatesTopologies`).
- :mod:`~agents.sb3.ppo`, :mod:`~agents.sb3.dqn`: the algorithms' variants (group baseline, rotation).
- :mod:`~agents.sb3.factory`: models from rlte's configuration (:func:`make_model`, :func:`load_model`).
- :mod:`~agents.sb3.adapters`: trained models behind the RoutingPolicy and path-chooser interfaces.

Every public name is re-exported here, so ``from agents.sb3 import X`` reaches it.
"""

from .adapters import SB3GraphPathChooser, SB3GraphSplitPolicy, SB3SplitPolicy
from .buffers import DictNStepReplayBuffer
from .dqn import RotatingDQN
from .factory import (ADVANTAGES, ALGORITHMS, SET_BY_MAKE_MODEL, accepted_keywords, check_keywords, load_model,
                      make_model)
from .layers import (LastChannel, LinkGraphExtractor, LinkHeads, PathGraphExtractor, PerAction, PerLink,
                     RefinedLinkHeads, RefiningLinkExtractor, link_cost_ratios)
from .policies import GRAPH_POLICIES, POLICIES, GraphActorCriticPolicy, GraphQNetwork, GraphQPolicy, TopologyFreePolicy
from .ppo import GroupBaselinePPO, RotatingGroupBaselinePPO, RotatingPPO, group_advantages
from .rotation import RotatesTopologies
from .schedules import SCHEDULED, ExplorationDecay, with_schedules

__all__ = ["ADVANTAGES", "ALGORITHMS", "GRAPH_POLICIES", "POLICIES", "SCHEDULED", "SET_BY_MAKE_MODEL",
           "DictNStepReplayBuffer", "ExplorationDecay", "GraphActorCriticPolicy", "GraphQNetwork", "GraphQPolicy",
           "GroupBaselinePPO", "LastChannel", "LinkGraphExtractor", "LinkHeads", "PathGraphExtractor", "PerAction",
           "PerLink", "RefinedLinkHeads", "RefiningLinkExtractor", "RotatesTopologies", "RotatingDQN",
           "RotatingGroupBaselinePPO", "RotatingPPO", "SB3GraphPathChooser", "SB3GraphSplitPolicy", "SB3SplitPolicy",
           "TopologyFreePolicy", "accepted_keywords", "check_keywords", "group_advantages", "link_cost_ratios",
           "load_model", "make_model", "with_schedules"]
