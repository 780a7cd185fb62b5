"""Serving the viewer until Ctrl-C: the socket is bound here, before uvicorn starts, so that a
port in use is one line naming it rather than uvicorn's log and exit."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from typing import TextIO

import uvicorn

from teachloop.errors import TeachloopError
from teachloop.store.store import Store
from teachloop.view.web import LOOPBACK_HOSTS, app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise TeachloopError(f"cannot listen on {host}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restart can reuse a port whose last connections are in TIME_WAIT; a
    # port another process listens on still fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise TeachloopError(
                f"port {port} on {host} is in use: stop what listens there or pick another "
                "with --port"
            ) from None
        raise TeachloopError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def serve(
    store: Store, *, host: str = "127.0.0.1", port: int = 8000, out: TextIO = sys.stdout
) -> int:
    """Serve the viewer of ``store`` on ``host``:``port`` until interrupted (Ctrl-C)."""
    loopback = is_loopback(host)
    if not loopback:
        print(
            f"warning: listening on {host}: the viewer has no authentication, so anyone who "
            "can reach this address can read the whole log (bind 127.0.0.1, the default, and "
            "use an SSH tunnel instead)",
            file=sys.stderr,
        )
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    # On loopback only the loopback names are answered (no DNS rebinding); on another address
    # the user chose to be reachable under whatever name points there.
    web = app(store, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    try:
        server = uvicorn.Server(
            uvicorn.Config(web, log_level="warning", lifespan="off", access_log=False)
        )
        # The socket already listens: a browser opened on this line waits for uvicorn, and a
        # Ctrl-C from here on is a clean stop.
        print(
            f"teachloop view: http://{shown}:{bound}/ (read-only, {store.location}); "
            "Ctrl-C stops it",
            file=out,
            flush=True,
        )
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C, then raises it again
        pass
    finally:
        sock.close()
    print("teachloop view: stopped", file=out)
    return 0
