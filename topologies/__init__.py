"""Network descriptions: topologies, traffic, candidate paths and routings.

Pure data with no side effects beyond reading files; imports nothing else of rlte.
"""

from .catalog import list_topologies, load_topology, load_zoo, zoo_names
from .costs import FORTZ_THORUP_PIECES, fortz_thorup_cost
from .generators import TRANSIT_ROLES, endpoint_mask, fat_tree, leaf_spine, scale_capacities, waxman
from .model import Link, Node, Topology, TopologyError, bidirectional_links
from .paths import (PATH_METRICS, PathSet, default_pairs, equal_cost_paths, k_shortest_paths, lift_ratios,
                    pathset_from_dict, pathset_to_dict, union_pathsets)
from .readers import read_abilene, read_graphml, read_node_link, read_sndlib, read_sndlib_demands, read_topology
from .routing import Routing, RoutingError, check_ratios, per_hop_ecmp_ratios
from .traffic import TrafficEnvelope, TrafficError, TrafficSequence, load_traffic

__all__ = [
    "FORTZ_THORUP_PIECES", "PATH_METRICS", "TRANSIT_ROLES", "Link", "Node", "PathSet", "Routing", "RoutingError", "Topology",
    "TopologyError", "TrafficEnvelope", "TrafficError", "TrafficSequence", "bidirectional_links", "check_ratios", "default_pairs", "endpoint_mask",
    "equal_cost_paths", "fat_tree", "fortz_thorup_cost", "k_shortest_paths", "lift_ratios", "pathset_from_dict", "pathset_to_dict",
    "union_pathsets", "leaf_spine", "list_topologies", "load_topology",
    "load_traffic", "load_zoo", "per_hop_ecmp_ratios", "read_abilene", "read_graphml", "read_node_link",
    "read_sndlib", "read_sndlib_demands", "read_topology", "scale_capacities", "waxman", "zoo_names",
]
