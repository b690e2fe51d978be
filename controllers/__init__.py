"""The live side: the Ryu-API (os-ken) SDN controller and the policy runtime.

Imports ``topologies`` and the exported-policy format only — never SB3 or torch."""
