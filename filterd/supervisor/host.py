"""What the supervisor asks of the machine it runs on: its state directory
to itself, enough file descriptors, and a word to systemd.

- ``lock_state_dir``: one instance per state directory (an flock held for
  the life of the process): two would overwrite each other's indexes,
  snapshots and audit trail;
- ``raise_fd_limit``: each TCP connection and each upstream query in flight
  holds a descriptor, and the workers inherit the limit;
- ``notify_systemd``: sd_notify(3) (``READY=1``, ``STOPPING=1``) without
  libsystemd, for ``Type=notify`` units.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
from pathlib import Path

from filterd.errors import StartupError
from filterd.files import DirectoryInUse, lock_directory

log = logging.getLogger("filterd")


def lock_state_dir(state_dir: Path) -> None:
    """Hold ``state_dir`` for this process, or refuse to start naming the holder."""
    try:
        lock_directory(state_dir)
    except DirectoryInUse as exc:
        raise StartupError(f"state directory {exc}; not starting") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise StartupError(f"state directory: {where}{exc.strerror}") from None


def raise_fd_limit() -> int:
    """Raise the open-file limit to the hard limit (workers inherit it). Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    log.info("open-file limit %d", soft)
    return soft


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.send(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)
