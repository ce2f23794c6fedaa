"""How the commands of the rooms beside the daemon fail: one line, a known status.

``filterd authority ...``, ``filterd audit verify``, ``filterd report`` and
``filterd probe`` are run by people and by scripts: an expected problem (a
bad argument, an unreadable file, a refused operation) is one line on stderr
naming the command, and an exit status the scripts can test (documented per
command), never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Final

from filterd.errors import ConfigError, FilterdError

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

Handler = Callable[[argparse.Namespace], int]


class UsageError(FilterdError):
    """Bad input on the command line: one line, exit status 2."""


def error(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def guarded(
    prog: str,
    usage: tuple[type[Exception], ...] = (),
    *,
    unreadable_is_usage: bool = False,
) -> Callable[[Handler], Handler]:
    """Wrap a command's handler. ``UsageError``, ``ConfigError`` (one line per
    problem) and the ``usage`` errors exit 2; any other ``FilterdError`` and
    ``OSError`` exit 1 (or 2 for an unreadable named file when
    ``unreadable_is_usage``: an input the user gave); Ctrl-C exits 1."""

    usage_errors: tuple[type[Exception], ...] = (UsageError, *usage)

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except ConfigError as exc:
                for problem in exc.problems:
                    error(prog, problem)
                return EXIT_USAGE
            except usage_errors as exc:
                error(prog, str(exc))
                return EXIT_USAGE
            except FilterdError as exc:
                error(prog, str(exc))
                return EXIT_FAILURE
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                error(prog, f"{where}{exc.strerror or exc}")
                return EXIT_USAGE if unreadable_is_usage and exc.filename else EXIT_FAILURE
            except KeyboardInterrupt:
                return EXIT_FAILURE

        return run

    return wrap
