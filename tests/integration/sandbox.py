"""Run a command inside the kernel restrictions the systemd unit asks for,
without systemd: ``python sandbox.py [--strict] UNIT -- COMMAND...``.

There is no systemd as PID 1 where the tests run, so the unit cannot be
started for real. This applies what the unit's directives ask of the kernel
and then executes ``COMMAND``, which inherits all of it:

- ``SystemCallFilter=`` as systemd reads it (the first list is an allow list,
  ``~`` removes, later lists add back; groups are expanded by
  ``systemd-analyze syscall-filter``), loaded with libseccomp. A call outside
  the set fails with ``SystemCallErrorNumber=``, or with ``--strict`` kills the
  process, so a test sees even a refusal the program would have shrugged off.
- ``MemoryDenyWriteExecute=yes`` as the kernel's ``PR_SET_MDWE`` (systemd 252
  uses a seccomp filter to the same effect: no mapping both writable and
  executable, no executable permission added later).
- ``NoNewPrivileges=yes``, ``UMask=``.
- ``ProtectProc=invisible`` and ``ProcSubset=pid``: a new mount namespace with
  its own ``/proc`` mounted ``hidepid=invisible,subset=pid``.

Not reproduced: the dynamic user (tests run as whoever runs them), the
capability set, the file-system protections and ``RestrictAddressFamilies=``.
Needs root (for the mount namespace) and libseccomp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import subprocess
import sys
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000


def directives(unit: str) -> list[tuple[str, str]]:
    """``(key, value)`` of the ``[Service]`` section, in order (comments skipped)."""
    pairs: list[tuple[str, str]] = []
    section = ""
    for raw in unit.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


@functools.cache
def expand(item: str) -> frozenset[str]:
    """A system call name, or every call of a ``@group`` (nested groups too)."""
    if not item.startswith("@"):
        return frozenset({item})
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", item],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:  # the first line is the group's name
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry)
    return frozenset(names)


def allowed_calls(pairs: list[tuple[str, str]]) -> frozenset[str] | None:
    """The unit's allow list, or None without ``SystemCallFilter=``
    (systemd.exec(5): an allow list starts from ``@default``)."""
    allowed: set[str] | None = None
    for key, value in pairs:
        if key != "SystemCallFilter":
            continue
        remove = value.startswith("~")
        names: set[str] = set()
        for item in value.removeprefix("~").split():
            names |= expand(item)
        if allowed is None:
            if remove:
                raise SystemExit("sandbox: a deny-list SystemCallFilter= is not supported")
            allowed = set(expand("@default"))
        if remove:
            allowed -= names
        else:
            allowed |= names
    return None if allowed is None else frozenset(allowed)


def check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno() or -result
        raise OSError(code, f"sandbox: {what}: {os.strerror(code)}")


def mount_private_proc(libc: ctypes.CDLL, options: str) -> None:
    check(libc.unshare(CLONE_NEWNS), "unshare")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    check(libc.mount(b"proc", b"/proc", b"proc", flags, options.encode()), "mount /proc")


def load_filter(allowed: frozenset[str], default_action: int) -> None:
    seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    context = seccomp.seccomp_init(default_action)
    if not context:
        raise OSError("sandbox: seccomp_init failed")
    for name in sorted(allowed):
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number == -1:  # __NR_SCMP_ERROR: no such call on this architecture
            continue
        # Calls of other architectures resolve to negative pseudo-numbers that
        # libseccomp refuses on this one: skipping them is what systemd does.
        seccomp.seccomp_rule_add(context, SCMP_ACT_ALLOW, number, 0)
    result = seccomp.seccomp_load(context)
    if result != 0:
        raise OSError(-result, "sandbox: seccomp_load failed")


def main(argv: list[str]) -> int:
    strict = argv[:1] == ["--strict"]
    if strict:
        argv = argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    pairs = directives(Path(argv[0]).read_text())
    settings = dict(pairs)
    command = argv[2:]
    allowed = allowed_calls(pairs)  # before the filter: it runs systemd-analyze
    libc = ctypes.CDLL(None, use_errno=True)

    proc_options = []
    if settings.get("ProtectProc", "default") != "default":
        proc_options.append(f"hidepid={settings['ProtectProc']}")
    if settings.get("ProcSubset", "all") != "all":
        proc_options.append(f"subset={settings['ProcSubset']}")
    if proc_options:
        mount_private_proc(libc, ",".join(proc_options))
    if "UMask" in settings:
        os.umask(int(settings["UMask"], 8))
    if settings.get("NoNewPrivileges") == "yes":
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    if settings.get("MemoryDenyWriteExecute") == "yes":
        check(libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0), "PR_SET_MDWE")
    if allowed is not None:
        errno_name = settings.get("SystemCallErrorNumber", "")
        if strict or not errno_name:
            action = SCMP_ACT_KILL_PROCESS
        else:
            action = SCMP_ACT_ERRNO | getattr(errno, errno_name)
        load_filter(allowed, action)
    os.execv(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
