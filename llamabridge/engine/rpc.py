"""RPC devices: llama.cpp's rpc-server on other machines (or other processes), whose devices a model's layers
are split over like local GPUs.

llama.cpp's RPC backend ends the whole process when a server cannot be reached (GGML_ABORT in
ggml-rpc.cpp), so every server is probed here first, with the protocol's own HELLO: a server that is not
there, not an rpc-server, or of another protocol version is a ModelLoadError naming it, and nothing is
added. Each server's devices join ggml's registry once per process (as `RPC0[host:port]`, ...).
"""

from __future__ import annotations

import socket
import struct
import threading

from .. import _core
from ..errors import ModelLoadError
from .params import split_endpoint

HELLO = 14                # RPC_CMD_HELLO (ggml-rpc.cpp: "must be always 14")
CONN_CAPS = 24            # RPC_CONN_CAPS_SIZE (transport.h)
PROTOCOL_MAJOR = 7        # RPC_PROTO_MAJOR_VERSION (ggml-rpc.h) of the vendored llama.cpp
PROTOCOL_MINOR = 0
PROBE_TIMEOUT = 10.0      # seconds for a server to accept and answer HELLO

_added: dict[str, list[str]] = {}
_lock = threading.Lock()


def _receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = sock.recv(n - len(data))
        if not piece:
            raise ConnectionError("it closed the connection")
        data += piece
    return data


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT) -> tuple[int, int, int]:
    """The protocol version an rpc-server answers HELLO with; ModelLoadError when it cannot be used."""
    host, port = split_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(bytes([HELLO]) + struct.pack("<Q", CONN_CAPS) + bytes(CONN_CAPS))
            (size,) = struct.unpack("<Q", _receive(sock, 8))
            if size != 4 + CONN_CAPS:
                raise ConnectionError(f"answered HELLO with {size} bytes: not an rpc-server of this protocol")
            major, minor, patch = _receive(sock, size)[:3]
    except socket.timeout:
        raise ModelLoadError(f"rpc-server {endpoint}: no answer within {timeout:g}s (not an rpc-server, or busy "
                             "with another client: an rpc-server serves one at a time)") from None
    except OSError as exc:
        raise ModelLoadError(f"rpc-server {endpoint}: unreachable ({exc.strerror or exc})") from None
    if major != PROTOCOL_MAJOR or minor > PROTOCOL_MINOR:
        raise ModelLoadError(f"rpc-server {endpoint}: protocol {major}.{minor}.{patch}, this build speaks "
                             f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}: run an rpc-server of the same llama.cpp")
    return major, minor, patch


def add_servers(endpoints: tuple[str, ...]) -> list[str]:
    """Probe each server, then add its devices (once per process); the names of all their devices."""
    names: list[str] = []
    with _lock:
        for endpoint in endpoints:
            if endpoint not in _added:
                probe(endpoint)
                _added[endpoint] = _core.rpc_add_server(endpoint)
                _core.set_abort_note(f" (rpc-servers in use: {', '.join(_added)}; llama.cpp's RPC backend cannot "
                                     "go on when one goes away: start serve again once it is back, e.g. from a "
                                     "supervisor such as systemd's Restart=on-failure)")
            names += _added[endpoint]
    return names


def added_devices() -> dict[str, list[str]]:
    """Every server added so far and its devices' names."""
    with _lock:
        return {e: list(names) for e, names in _added.items()}
