"""The operators an authority serves: who may fetch and report, and where to push.

``operators.json`` in the data directory holds, per operator id, the SHA-256
of its bearer token (the token itself is shown once, at ``operator add`` or
``operator token``, and never stored) and its notify URLs. The serving
process re-reads the file only when it was replaced, so ``operator add`` on
a running authority takes effect at the next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from filterd.authority.records import SERVED_MODE, AuthorityError, ParsedFile
from filterd.errors import FilterdError
from filterd.files import write_atomically

OPERATOR_ID: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class Operator:
    operator_id: str
    token_sha256: str
    notify: tuple[str, ...] = ()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OperatorRegistry:
    """Reads and writes of ``operators.json``; changes hold the directory lock."""

    def __init__(
        self, path: Path, locked: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.path = path
        self._locked = locked
        self._file: ParsedFile[dict[str, Operator]] = ParsedFile(path, self._parse, dict)

    def all(self) -> dict[str, Operator]:
        """The registered operators, re-read only when the file was replaced."""
        return self._file.get()

    def _parse(self, data: bytes) -> dict[str, Operator]:
        try:
            raw = json.loads(data)
            operators = {}
            for operator_id, fields in raw.items():
                token_sha256, notify = fields["token_sha256"], fields["notify"]
                if not isinstance(token_sha256, str) or not isinstance(notify, list):
                    raise TypeError(operator_id)
                operators[operator_id] = Operator(operator_id, token_sha256, tuple(notify))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FilterdError(f"{self.path}: not a valid operators file") from None
        return operators

    def add(self, operator_id: str, notify: Iterable[str]) -> str:
        """Register an operator; returns its new token (stored only hashed)."""
        if not OPERATOR_ID.fullmatch(operator_id):
            raise AuthorityError(f"operator id {operator_id!r}: expected [a-z0-9][a-z0-9._-]*")
        urls = tuple(notify)
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise AuthorityError(f"notify URL {url!r}: expected http:// or https://")
        with self._locked():
            operators = dict(self.all())
            if operator_id in operators:
                raise AuthorityError(f"operator {operator_id!r} exists")
            token = secrets.token_urlsafe(32)
            operators[operator_id] = Operator(operator_id, hash_token(token), urls)
            self._write(operators)
        return token

    def new_token(self, operator_id: str) -> str:
        """Replace an operator's token (the old one stops working at once)."""
        with self._locked():
            operators = dict(self.all())
            current = self._operator(operators, operator_id)
            token = secrets.token_urlsafe(32)
            operators[operator_id] = Operator(operator_id, hash_token(token), current.notify)
            self._write(operators)
        return token

    def remove(self, operator_id: str) -> None:
        with self._locked():
            operators = dict(self.all())
            self._operator(operators, operator_id)
            del operators[operator_id]
            self._write(operators)

    def authenticate(self, token: str) -> str | None:
        """The operator holding ``token``, or None. Every stored hash is compared,
        so the time taken does not depend on which one matches."""
        presented = hash_token(token)
        found = None
        for operator in self.all().values():
            if hmac.compare_digest(operator.token_sha256, presented):
                found = operator.operator_id
        return found

    @staticmethod
    def _operator(operators: dict[str, Operator], operator_id: str) -> Operator:
        if operator_id not in operators:
            raise AuthorityError(f"no operator {operator_id!r}")
        return operators[operator_id]

    def _write(self, operators: dict[str, Operator]) -> None:
        document = {
            op.operator_id: {"token_sha256": op.token_sha256, "notify": list(op.notify)}
            for op in sorted(operators.values(), key=lambda op: op.operator_id)
        }
        text = json.dumps(document, indent=2).encode() + b"\n"
        write_atomically(self.path, text, mode=SERVED_MODE)
