"""The one error tree of filterd.

Every error a user can cause carries enough context to be reported in one
line without a traceback: configuration problems carry the key path (and the
file), list problems carry file:line, and query problems carry the DNS rcode
they become on the wire (the h11 ``error_status_hint`` idea).
"""

from __future__ import annotations


class FilterdError(Exception):
    """Base class: anything filterd reports to a person as a one-line message."""


class ConfigError(FilterdError):
    """The configuration is invalid; ``problems`` holds one line per problem.

    The CLI prints each problem on its own line and exits with status 2.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ListError(FilterdError):
    """A blocklist cannot be used at all (unreadable, unknown format, empty by error)."""


class StartupError(FilterdError):
    """The daemon cannot start for an operational reason (port in use, no upstream)."""


class QueryError(FilterdError):
    """A query that cannot be served as asked; ``rcode`` is what the client gets.

    ``rcode`` may be an extended rcode (> 15, e.g. BADVERS = 16), which the
    synthesiser splits between the header and the OPT record (RFC 6891 §6.1.3).
    """

    def __init__(self, rcode: int, reason: str) -> None:
        self.rcode = rcode
        self.reason = reason
        super().__init__(reason)
