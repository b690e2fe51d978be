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

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from controllers.fabric import HOST_PORT, FabricPlan, dpid_of, host_ip, host_mac, source_ip

LOG = logging.getLogger("rlte.emulation")
# Marks what an emulation made, so cleaning up touches nothing else on the machine (Mininet's
# own `mn -c` deletes every OVS bridge, kills every `ping` and removes /tmp/*.log): an external
# id on each OVS bridge and an environment variable inherited by each host shell, both set to
# the pid of the process that built the network.
OWNER_KEY = "rlte-emulation"
OWNER_ENV = "RLTE_EMULATION_OWNER"


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
    # Queue of each shaped link, as drain time. Linux's default 1000-packet queue holds over a
    # second at emulated rates; a bounded buffer keeps delay and drain times realistic.
    buffer_s: float = 0.2


@dataclass
class EmulatedNetwork:
    """A running Mininet network; use as a context manager so it is always torn down."""

    plan: FabricPlan
    controller_port: int
    settings: EmulationSettings = field(default_factory=EmulationSettings)
    notes: list[str] = field(default_factory=list)
    controller_host: str = "127.0.0.1"  # the controller's OpenFlow address (an IPv4 address, as OVS needs)

    def __post_init__(self) -> None:
        if self.settings.datapath not in ("auto", "kernel", "user"):
            raise ValueError(f"datapath must be auto, kernel or user, got {self.settings.datapath!r}")
        if not self.settings.capacity_scale > 0:
            raise ValueError(f"capacity_scale must be positive, got {self.settings.capacity_scale!r}")
        if not self.settings.buffer_s > 0:
            raise ValueError(f"buffer_s must be positive, got {self.settings.buffer_s!r}")
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
        inherited = os.environ.get(OWNER_ENV)
        os.environ[OWNER_ENV] = str(os.getpid())  # host shells are started by addHost and inherit it
        try:
            net.addController(RemoteController("c0", ip=self.controller_host, port=self.controller_port))
            for n in range(topo.num_nodes):
                switch_node = net.addSwitch(f"s{n + 1}", dpid=f"{dpid_of(n):016x}")
                host = net.addHost(f"h{n + 1}", ip=f"{host_ip(n)}/8", mac=host_mac(n))
                net.addLink(host, switch_node, port2=HOST_PORT)  # host side unshaped
            ports = self.plan.neighbor_ports
            shaped: dict[str, float] = {}   # switch interface -> its emulated rate, bit/s
            for u, v in self.plan.cables:
                params = {}
                for end, (a, b) in (("params1", (u, v)), ("params2", (v, u))):
                    link = topo.link_index.get((a, b))
                    # a one-way link in the model still needs a return direction: give it the forward capacity
                    link = link if link is not None else topo.link_index[(b, a)]
                    rate = topo.capacities[link] * self.settings.capacity_scale
                    params[end] = {"bw": rate / 1e6}
                    shaped[f"s{a + 1}-eth{ports[(a, b)]}"] = rate
                    if delay and topo.delays[link] > 0:
                        params[end]["delay"] = f"{topo.delays[link] * 1e3:.3f}ms"
                net.addLink(f"s{u + 1}", f"s{v + 1}", port1=ports[(u, v)], port2=ports[(v, u)], **params)
            net.build()
            net.start()  # OVS bridges are created here
            _ovs_vsctl(*(arg for sw in net.switches for arg in
                         ("--", "set", "bridge", sw.name, f"external-ids:{OWNER_KEY}={os.getpid()}")))
            _batch("ip", [f"link set dev {intf.name} alias {OWNER_KEY}:{os.getpid()}"
                       for sw in net.switches for intf in sw.intfList() if intf.name != "lo"])
            self._bound_queues(shaped)
            for host in net.hosts:
                for intf in host.intfList():
                    host.cmd(f"ethtool -K {intf.name} tx off rx off >/dev/null 2>&1")
            net.staticArp()
        except BaseException:
            self.stop()
            raise
        finally:
            if inherited is None:
                os.environ.pop(OWNER_ENV, None)
            else:
                os.environ[OWNER_ENV] = inherited
        return self

    def _bound_queues(self, shaped: dict[str, float]) -> None:
        """Replace the default queue under each link's shaper (HTB class 5:1, as TCLink builds it)
        with a byte FIFO of ``buffer_s`` at the link's rate (at least two full frames)."""
        _batch("tc", [f"qdisc replace dev {intf} parent 5:1 handle 10: bfifo limit "
                      f"{max(2 * 1514, int(self.settings.buffer_s * rate / 8))}" for intf, rate in shaped.items()])

    def add_source_addresses(self, count: int) -> None:
        """Give every host ``count`` extra addresses (see :func:`controllers.fabric.source_ip`)."""
        for n in range(self.plan.topology.num_nodes):
            host = self.host(n)
            commands = [f"address add {source_ip(n, i)}/8 dev {host.defaultIntf().name}" for i in range(count)]
            # one `ip -batch` from a file: a shell line that long would overflow the host's terminal
            with _batch_file("ip", commands) as batch:
                output = host.cmd(f"ip -batch {batch}")
            if output.strip():
                raise EmulationError(f"adding source addresses to {host.name} failed: {output.strip()}")

    def host(self, node: int):
        return self.net.get(f"h{node + 1}")

    def switches_not_connected(self) -> list[int]:
        """Nodes whose switch has no OpenFlow connection to its controller (as OVS reports it)."""
        controllers = {uuid: connected for (_, uuid), connected in json.loads(_ovs_vsctl(
            "--format=json", "--columns=_uuid,is_connected", "list", "controller"))["data"]}
        bridges = {name: column for name, column in json.loads(_ovs_vsctl(
            "--format=json", "--columns=name,controller", "list", "bridge"))["data"]}

        def connected(column) -> bool:  # ["uuid", U] for one controller, ["set", [["uuid", U], ...]] for several
            uuids = [column[1]] if column[0] == "uuid" else [u for _, u in column[1]]
            return any(controllers.get(u) is True for u in uuids)

        return [n for n in range(self.plan.topology.num_nodes)
                if f"s{n + 1}" not in bridges or not connected(bridges[f"s{n + 1}"])]

    def wait_connected(self, timeout_s: float = 60.0) -> None:
        """Until every switch holds an OpenFlow connection to the controller (a controller
        without an API to ask whether it programmed them): EmulationError naming the rest."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self.switches_not_connected()
            if not missing:
                return
            if time.monotonic() > deadline:
                names = self.plan.topology.node_names
                raise EmulationError(f"switches {', '.join(f's{n + 1} ({names[n]})' for n in missing)} did not "
                                     f"connect to the controller at {self.controller_host}:{self.controller_port} "
                                     f"within {timeout_s:.0f} s")
            time.sleep(0.2)

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
            except Exception:  # a half-built network: remove what this process made
                LOG.exception("mininet stop failed; removing this process's bridges and host shells")
                clean_leftovers(owners={os.getpid()})

    def __enter__(self) -> "EmulatedNetwork":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _ovs_vsctl(*args: str) -> str:
    result = subprocess.run(["ovs-vsctl", "--timeout=5", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise EmulationError(f"ovs-vsctl {' '.join(args[:4])} ...: {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def _batch_file(tool: str, commands: list[str]) -> Iterator[str]:
    """A temporary file of ``ip`` or ``tc`` commands for ``TOOL -batch FILE``."""
    with tempfile.NamedTemporaryFile("w", prefix=f"rlte-{tool}-", suffix=".txt") as batch:
        batch.write("\n".join(commands) + "\n")
        batch.flush()
        yield batch.name


def _batch(tool: str, commands: list[str]) -> None:
    """Run many ``ip`` or ``tc`` commands in the root namespace as one process."""
    with _batch_file(tool, commands) as batch:
        result = subprocess.run([tool, "-batch", batch], capture_output=True, text=True)
    if result.returncode != 0:
        raise EmulationError(f"{tool} -batch ({commands[0]} ...) failed: {result.stderr.strip()}")


def _owned_interfaces() -> dict[str, int]:
    """Root-namespace interface -> owner pid, from the alias each switch port gets."""
    listing = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    owned = {}
    for line in listing.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        marker = line.partition(f"alias {OWNER_KEY}:")[2].split()
        if marker and marker[0].isdigit():
            owned[name] = int(marker[0])
    return owned


def _owned_bridges() -> dict[str, int]:
    """OVS bridge -> pid of the rlte process that made it."""
    table = _ovs_vsctl("--format=json", "--columns=name,external_ids", "list", "bridge")
    owned = {}
    for name, (_, pairs) in json.loads(table)["data"]:
        owner = dict(pairs).get(OWNER_KEY)
        if owner is not None and owner.isdigit():
            owned[name] = int(owner)
    return owned


def _owned_processes() -> dict[int, int]:
    """pid -> owner pid, for live (non-zombie) processes that carry the owner variable."""
    found = {}
    marker = f"{OWNER_ENV}=".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().split(")")[-1].split()[0] == "Z":  # zombies hold nothing
                continue
            for item in (entry / "environ").read_bytes().split(b"\0"):
                if item.startswith(marker) and item[len(marker):].isdigit():
                    found[int(entry.name)] = int(item[len(marker):])
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only (PermissionError: it exists, not ours)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _owned_by(chosen) -> dict[str, list]:
    """The bridges, host shells and switch interfaces whose owner pid ``chosen(owner)`` accepts."""
    return {"bridges": sorted(b for b, o in _owned_bridges().items() if chosen(o)),
            "processes": sorted(p for p, o in _owned_processes().items() if chosen(o)),
            "interfaces": sorted(i for i, o in _owned_interfaces().items() if chosen(o))}


def clean_leftovers(owners: set[int] | None = None) -> dict[str, list]:
    """Remove the OVS bridges, their links and the host shells that rlte emulations left behind.

    ``owners``: pids of the processes whose networks to remove; by default every owner that is
    no longer running (a crashed run). Nothing that rlte did not make is touched. Returns what
    was removed.
    """
    found = _owned_by((lambda owner: owner in owners) if owners is not None else (lambda owner: not _alive(owner)))
    for pid in found["processes"]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for bridge in found["bridges"]:
        _ovs_vsctl("--if-exists", "del-br", bridge)
    # switch ports (veth pairs: deleting one end removes both), even where the bridge is gone
    for name in found["interfaces"]:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    return found


def leftovers(settle_s: float = 3.0, owner: int | None = None) -> dict[str, list]:
    """What a finished run of process ``owner`` (default: this one) left behind: OVS bridges,
    switch interfaces and host shells. Killed shells take a moment to exit: look again for up to ``settle_s``."""
    owner = os.getpid() if owner is None else owner
    deadline = time.monotonic() + settle_s
    while True:
        found = _owned_by(lambda o: o == owner)
        if not any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    """``python -m envs.emulation --clean``: remove what crashed rlte emulations left behind."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m envs.emulation", description=main.__doc__)
    parser.add_argument("--clean", action="store_true", required=True,
                        help="remove bridges and host shells of rlte runs that are no longer running")
    parser.parse_args(argv)
    removed = clean_leftovers()
    print(f"removed {len(removed['bridges'])} bridges, {len(removed['interfaces'])} interfaces and "
          f"{len(removed['processes'])} host processes left by earlier rlte emulations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
