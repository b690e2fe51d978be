"""A fake OpenFlow 1.3 switch, as a broken or hostile one behaves: it says HELLO, answers the
FEATURES_REQUEST with a chosen datapath id, then never says anything again."""

from __future__ import annotations

import socket
import struct
import time

OFP_VERSION = 4  # OpenFlow 1.3
HELLO, FEATURES_REQUEST, FEATURES_REPLY = 0, 5, 6


def header(msg_type: int, length: int, xid: int) -> bytes:
    return struct.pack("!BBHI", OFP_VERSION, msg_type, length, xid)


def _receive(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the controller closed the connection")
        data += chunk
    return data


def read_message(sock: socket.socket, deadline: float) -> tuple[int, int, bytes]:
    """The next OpenFlow message: (type, xid, body)."""
    _, msg_type, length, xid = struct.unpack("!BBHI", _receive(sock, 8, deadline))
    return msg_type, xid, _receive(sock, length - 8, deadline)


def silent_switch(port: int, dpid: int, timeout: float = 10.0) -> socket.socket:
    """Connect as switch ``dpid``, finish the handshake, and return the socket (then silent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    sock.sendall(header(HELLO, 8, 1))
    while True:
        msg_type, xid, _ = read_message(sock, deadline)
        if msg_type == FEATURES_REQUEST:
            body = struct.pack("!QIBB2xII", dpid, 256, 254, 0, 0, 0)  # datapath id, buffers, tables, ...
            sock.sendall(header(FEATURES_REPLY, 8 + len(body), xid) + body)
            return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes ``sock`` within ``seconds`` (whatever it sends first is read and dropped)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(4096):
                return True
    except (socket.timeout, TimeoutError):
        return False
    except OSError:  # reset
        return True
    return False
