"""The running controller (os-ken, no root needed) against switches and clients that misbehave:
a switch that goes silent after its handshake, one that is not part of the network, garbage on
the OpenFlow port, a client that never finishes its request. Whatever they do, every wait has
a deadline, reads are answered, nothing changes that was not asked for, and the controller lives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.controllers.fake_switch import closed_within, silent_switch
from envs.mininet_backend import free_port, stop_process
from tests.support import ROOT, wait_for_port

TOKEN = "test-token"


@pytest.fixture(scope="module")
def controller():
    """`rlte controller` for Abilene on free ports; its log is checked by the tests."""
    of_port, api_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from experiments.cli import main; main()", "controller", "--topology", "abilene",
         "--of-port", str(of_port), "--api-port", str(api_port)], cwd=ROOT,
        env={**os.environ, "RLTE_CONTROLLER_TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        wait_for_port(api_port, process)
        wait_for_port(of_port, process)
        yield {"of_port": of_port, "api": f"http://127.0.0.1:{api_port}", "api_port": api_port, "process": process}
    finally:
        stop_process(process, 20)


def request(controller, method: str, path: str, body=None, timeout: float = 30.0) -> tuple[int, dict, float]:
    """(status, reply, seconds) of one API call; the client's own timeout fails the test if it hangs."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"} if data else {}
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(controller["api"] + path, data, headers, method=method),
                                    timeout=timeout) as reply:
            return reply.status, json.loads(reply.read()), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), time.monotonic() - started


def test_a_silent_switch_delays_only_its_own_waits(controller):
    """A switch with a valid dpid that never answers a barrier or a stats request: reads are
    answered meanwhile, a fresh counter read returns within its deadline, a routing write is
    refused (503, nothing changed) while the switch's install holds the routing lock, and its
    disconnect releases everything it was owed."""
    from controllers.app import BARRIER_TIMEOUT_S, ROUTING_LOCK_TIMEOUT_S

    switch = silent_switch(controller["of_port"], dpid=1)  # ATLAM5; it is sent rules and a barrier now
    time.sleep(0.5)
    status, health, _ = request(controller, "GET", "/health")
    assert status == 503 and health["switches_ready"] == []  # answered, and honest: nothing is ready
    status, counters, seconds = request(controller, "GET", "/counters?fresh=1")
    assert status == 200 and counters["complete"] is False and seconds < 2.0 + 1.0
    change = {"pairs": {"ATLAng->CHINng": [0.5, 0.5, 0.0, 0.0]}}
    status, reply, seconds = request(controller, "PUT", "/routing", change)
    assert status == 503 and "another routing change is being installed" in reply["error"]
    assert seconds < ROUTING_LOCK_TIMEOUT_S + 1.0
    status, routing, _ = request(controller, "GET", "/routing")
    assert status == 200 and routing["version"] == 0  # the refused write changed nothing
    switch.close()  # its install's barrier is released by the disconnect, not by the timeout
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while time.monotonic() < deadline:
        status, reply, _ = request(controller, "PUT", "/routing", change)
        if status != 503:
            break
        time.sleep(0.2)
    assert status == 200 and reply["version"] == 1 and reply["switches_updated"] == 0, reply
    assert controller["process"].poll() is None


def test_unknown_switches_garbage_and_stalled_clients_are_closed(controller):
    from controllers.api import SOCKET_TIMEOUT_S
    from controllers.app import HANDSHAKE_TIMEOUT_S

    stranger = silent_switch(controller["of_port"], dpid=999)  # not one of Abilene's
    assert closed_within(stranger, 5.0)
    garbage = socket.create_connection(("127.0.0.1", controller["of_port"]))
    garbage.sendall(b"\xff\x00" + b"not openflow at all" * 4)
    stalled = socket.create_connection(("127.0.0.1", controller["api_port"]))
    stalled.sendall(b"PUT /routing HTTP/1.1\r\nContent-Length: 1000\r\n")  # and then nothing
    assert closed_within(stalled, SOCKET_TIMEOUT_S + 5.0)
    assert closed_within(garbage, HANDSHAKE_TIMEOUT_S + 5.0)
    assert request(controller, "GET", "/health")[0] in (200, 503)  # alive and answering
    again = silent_switch(controller["of_port"], dpid=999)
    assert closed_within(again, 5.0)
    status, events, _ = request(controller, "GET", "/events?since=0")
    assert [event["dpid"] for event in events if event["kind"] == "unknown_switch"] == [999]  # noted once
    assert [event["kind"] for event in events].count("bad_openflow_peer") == 1
    assert controller["process"].poll() is None
