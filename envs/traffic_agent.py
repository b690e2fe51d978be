"""Paced UDP sender and sink, run inside one emulated host (standard library only: it starts fast).

    python traffic_agent.py SPEC.json

SPEC: {"listen_port", "start_at" (epoch s), "duration_s", "payload_bytes", "grace_s",
       "window": [start, end] (epoch s), "flows": [{"src", "dst", "dport", "sport", "rate_bps"}],
       "result": path}

Each flow sends ``payload_bytes`` UDP datagrams from its own source address and port
so the switches' select groups hash flows, not packets, onto paths. ``rate_bps`` counts UDP
payload bits (what an application asks for, as iperf does); headers are what the
fidelity calibration measures. Every flow starts at a random phase so hosts do not
send in lockstep. Each datagram starts with its send time, so both ends also count
what was sent inside the measurement ``window``: delivery measured on those packets is
the steady state, not spoiled by the start or by packets still queued when the sink
stops (``grace_s`` after the last send; all hosts share one clock). The result JSON
holds sent and received byte counts, in all and within the window.
"""

from __future__ import annotations

import heapq
import json
import random
import resource
import select
import socket
import struct
import sys
import time


STAMP = struct.Struct("!d")  # send time, epoch seconds, at the start of every datagram


def run(spec: dict) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(spec["flows"]) + 64  # one socket per flow
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    padding = b"\x00" * (int(spec["payload_bytes"]) - STAMP.size)
    window_start, window_end = (float(t) for t in spec.get("window", (0.0, 0.0)))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("0.0.0.0", int(spec["listen_port"])))
    sink.setblocking(False)
    senders, schedule = [], []
    rng = random.Random(spec.get("seed", 0))
    for i, flow in enumerate(spec["flows"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((flow.get("src", "0.0.0.0"), int(flow["sport"])))
        sock.setblocking(False)
        interval = 8.0 * int(spec["payload_bytes"]) / float(flow["rate_bps"])
        senders.append((sock, (flow["dst"], int(flow["dport"])), interval))
        schedule.append((rng.uniform(0.0, interval), i))
    heapq.heapify(schedule)
    sent = [0] * len(senders)
    sent_in_window = [0] * len(senders)
    failed = 0
    received: dict[str, int] = {}
    received_in_window: dict[str, int] = {}

    start_wall = float(spec["start_at"])
    while time.time() < start_wall:
        time.sleep(min(0.01, max(0.0, start_wall - time.time())))
    start = time.perf_counter()
    stop_sending = start + float(spec["duration_s"])
    stop = stop_sending + float(spec.get("grace_s", 0.5))
    while True:
        now = time.perf_counter()
        if now >= stop:
            break
        while schedule and start + schedule[0][0] <= now and now < stop_sending:
            due, i = heapq.heappop(schedule)
            sock, address, interval = senders[i]
            stamp = time.time()
            try:
                size = sock.sendto(STAMP.pack(stamp) + padding, address)
                sent[i] += size
                if window_start <= stamp < window_end:
                    sent_in_window[i] += size
            except OSError:  # full socket buffer: the packet is lost at the source, and counted
                failed += 1
            heapq.heappush(schedule, (due + interval, i))
        wake = start + schedule[0][0] if schedule and now < stop_sending else stop
        timeout = max(0.0, min(wake, stop) - time.perf_counter())
        ready, _, _ = select.select([sink], [], [], timeout)
        if ready:
            while True:
                try:
                    data, (source, _) = sink.recvfrom(65536)
                except BlockingIOError:
                    break
                received[source] = received.get(source, 0) + len(data)
                if len(data) >= STAMP.size and window_start <= STAMP.unpack_from(data)[0] < window_end:
                    received_in_window[source] = received_in_window.get(source, 0) + len(data)
    return {"sent_bytes": sent, "sent_in_window_bytes": sent_in_window, "send_failures": failed,
            "received_bytes": received, "received_in_window_bytes": received_in_window}


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    result = run(spec)
    with open(spec["result"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
