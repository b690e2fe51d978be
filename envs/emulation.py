"""Realize a topology in Mininet + Open vSwitch, wired by the controller's plan.

One switch and one host per node; each neighbour pair becomes one ``TCLink`` whose two
directions are shaped to capacity × ``capacity_scale``. The OVS kernel datapath is used
when the kernel has it, else the userspace datapath, where TCP needs checksum offload
off on every host interface (measured, see DESIGN.md). Link delay needs netem: where
the kernel lacks it the links get no delay, and :attr:`EmulatedNetwork.notes` says so.

Needs root, the Debian packages ``mininet`` and ``openvswitch-switch`` and a running
``ovs-vswitchd``; :func:`emulation_problems` names whatever is missing.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from controllers.fabric import HOST_PORT, FabricPlan, dpid_of, host_ip, host_mac, source_ip

LOG = logging.getLogger("rlte.emulation")


class EmulationError(RuntimeError):
    """The emulated network cannot be built here; the message says what is missing."""


def emulation_problems() -> list[str]:
    """What stops Mininet from running on this machine (empty when nothing does)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("Mininet needs root")
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        problems.append("the mininet Python module is missing (Debian package 'mininet'; `make test` as root "
                        "installs it and links it into the virtual environment)")
    for tool in ("mnexec", "ovs-vsctl", "ethtool", "tc"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed")
    if shutil.which("ovs-vsctl") and subprocess.run(["ovs-vsctl", "--timeout=3", "show"],
                                                    capture_output=True).returncode != 0:
        problems.append("Open vSwitch is not running (start it: /usr/share/openvswitch/scripts/ovs-ctl start)")
    return problems


def require_emulation() -> None:
    problems = emulation_problems()
    if problems:
        raise EmulationError("cannot emulate here: " + "; ".join(problems))


@functools.cache
def kernel_has_netem() -> bool:
    """Try a netem qdisc on a throwaway dummy interface."""
    probe = "rltenetemprobe"
    if subprocess.run(["ip", "link", "add", probe, "type", "dummy"], capture_output=True).returncode != 0:
        return False
    try:
        return subprocess.run(["tc", "qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms"],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", probe], capture_output=True)


def kernel_has_ovs_datapath() -> bool:
    return Path("/sys/module/openvswitch").exists()


@dataclass
class EmulationSettings:
    capacity_scale: float = 1e-3     # 10 Gb/s -> 10 Mb/s
    datapath: str = "auto"           # auto | kernel | user
    delay: bool = True               # emulate link delay where netem exists


@dataclass
class EmulatedNetwork:
    """A running Mininet network; use as a context manager so it is always torn down."""

    plan: FabricPlan
    controller_port: int
    settings: EmulationSettings = field(default_factory=EmulationSettings)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.settings.datapath not in ("auto", "kernel", "user"):
            raise ValueError(f"datapath must be auto, kernel or user, got {self.settings.datapath!r}")
        if not self.settings.capacity_scale > 0:
            raise ValueError(f"capacity_scale must be positive, got {self.settings.capacity_scale!r}")
        self.net = None

    @property
    def datapath(self) -> str:
        if self.settings.datapath != "auto":
            return self.settings.datapath
        return "kernel" if kernel_has_ovs_datapath() else "user"

    def start(self) -> "EmulatedNetwork":
        require_emulation()
        from mininet.link import TCLink
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import OVSSwitch, RemoteController

        setLogLevel("warning")
        topo = self.plan.topology
        datapath = self.datapath
        delay = self.settings.delay and kernel_has_netem()
        if self.settings.delay and not delay:
            self.notes.append("no link delay: this kernel has no netem (CONFIG_NET_SCH_NETEM); "
                              "bandwidth shaping only")
        if datapath == "user":
            self.notes.append("OVS userspace datapath (no kernel module); checksum offload off on host interfaces")
        switch = functools.partial(OVSSwitch, datapath=datapath, protocols="OpenFlow13", failMode="secure")
        net = Mininet(topo=None, build=False, switch=switch, link=TCLink, controller=None,
                      autoSetMacs=False, autoStaticArp=False, waitConnected=False)
        self.net = net
        try:
            net.addController(RemoteController("c0", ip="127.0.0.1", port=self.controller_port))
            for n in range(topo.num_nodes):
                switch_node = net.addSwitch(f"s{n + 1}", dpid=f"{dpid_of(n):016x}")
                host = net.addHost(f"h{n + 1}", ip=f"{host_ip(n)}/8", mac=host_mac(n))
                net.addLink(host, switch_node, port2=HOST_PORT)  # host side unshaped
            ports = self.plan.neighbor_ports
            for u, v in self.plan.cables:
                params = {}
                for end, (a, b) in (("params1", (u, v)), ("params2", (v, u))):
                    link = topo.link_index.get((a, b))
                    # a one-way link in the model still needs a return direction: give it the forward capacity
                    link = link if link is not None else topo.link_index[(b, a)]
                    params[end] = {"bw": topo.capacities[link] * self.settings.capacity_scale / 1e6}
                    if delay and topo.delays[link] > 0:
                        params[end]["delay"] = f"{topo.delays[link] * 1e3:.3f}ms"
                net.addLink(f"s{u + 1}", f"s{v + 1}", port1=ports[(u, v)], port2=ports[(v, u)], **params)
            net.build()
            net.start()
            for host in net.hosts:
                for intf in host.intfList():
                    host.cmd(f"ethtool -K {intf.name} tx off rx off >/dev/null 2>&1")
            net.staticArp()
        except BaseException:
            self.stop()
            raise
        return self

    def add_source_addresses(self, count: int) -> None:
        """Give every host ``count`` extra addresses (see :func:`controllers.fabric.source_ip`)."""
        for n in range(self.plan.topology.num_nodes):
            host = self.host(n)
            commands = "\n".join(f"address add {source_ip(n, i)}/8 dev {host.defaultIntf().name}"
                                  for i in range(count))
            # one `ip -batch` from a file: a shell line that long would overflow the host's terminal
            batch = Path(tempfile.mkstemp(prefix="rlte-addr-", suffix=".txt")[1])
            try:
                batch.write_text(commands + "\n")
                output = host.cmd(f"ip -batch {batch}")
            finally:
                batch.unlink(missing_ok=True)
            if output.strip():
                raise EmulationError(f"adding source addresses to {host.name} failed: {output.strip()}")

    def host(self, node: int):
        return self.net.get(f"h{node + 1}")

    def set_cable(self, u: int, v: int, up: bool) -> None:
        """Take the cable between nodes u and v down (both directions) or bring it back."""
        if (u, v) not in self.plan.neighbor_ports:
            raise ValueError(f"nodes {u} and {v} are not neighbours")
        self.net.configLinkStatus(f"s{u + 1}", f"s{v + 1}", "up" if up else "down")

    def stop(self) -> None:
        if self.net is not None:
            net, self.net = self.net, None
            try:
                net.stop()
                for controller in net.controllers:  # Mininet stops but never terminates a controller's shell
                    controller.terminate()
            except Exception:  # a half-built network: fall back to Mininet's full cleanup
                LOG.exception("mininet stop failed; running mn -c cleanup")
                clean_leftovers()

    def __enter__(self) -> "EmulatedNetwork":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def clean_leftovers() -> None:
    """``mn -c``: remove every Mininet bridge, namespace, interface and process on this machine."""
    from mininet.clean import cleanup
    from mininet.log import setLogLevel

    setLogLevel("warning")
    cleanup()


def leftovers(settle_s: float = 3.0) -> dict[str, list[str]]:
    """What a finished run should not leave behind: OVS bridges and Mininet host shells.

    Killed shells take a moment to exit: look again for up to ``settle_s`` before reporting.
    """
    deadline = time.monotonic() + settle_s
    while True:
        found = _leftovers_now()
        if not (found["bridges"] or found["processes"]) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _leftovers_now() -> dict[str, list[str]]:
    bridges = subprocess.run(["ovs-vsctl", "--timeout=3", "list-br"], capture_output=True, text=True).stdout.split()
    table = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    shells = [line.split()[0] for line in table.splitlines()
              if "mininet:" in line and not line.split()[1].startswith("Z")]  # zombies hold nothing
    return {"bridges": bridges, "processes": shells}
