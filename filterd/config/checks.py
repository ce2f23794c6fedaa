"""Reading YAML strictly: a walker that records every problem with its key
path and line, and the converters that turn one value into a typed one.

Every converter raises ``ValueError``/``TypeError`` with a message that
reads after the key path ("server.listen[0]: ..."); ``Reader.get`` collects
it instead of stopping, so ``check-config`` reports every problem at once.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from filterd.config import ED25519_KEY_BYTES, EDE_NAMES, Endpoint, parse_endpoint
from filterd.errors import ConfigError
from filterd.model.layout import LIST_ID
from filterd.model.rules import Action, Scope

T = TypeVar("T")


class Reader:
    """Walks one mapping of the YAML document, collecting problems with their lines."""

    def __init__(self, doc: Document, raw: Any, path: str) -> None:
        self.doc = doc
        self.path = path
        self.seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            doc.problem(path, f"must be a mapping, got {kind_of(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, default: T, convert: Callable[[Any], T]) -> T:
        self.seen.add(name)
        if name not in self.raw:
            return default
        try:
            return convert(self.raw[name])
        except (ValueError, TypeError) as exc:
            self.doc.problem(self.key(name), str(exc))
            return default

    def section(self, name: str) -> Reader:
        self.seen.add(name)
        return Reader(self.doc, self.raw.get(name), self.key(name))

    def done(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.doc.problem(self.key(str(name)), "unknown key")


class Document:
    """A parsed YAML file with the line of every key path, for error messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.problems: list[str] = []
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.data: Any = loader.construct_document(node) if node is not None else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
        except ValueError as exc:
            # PyYAML builds an unquoted date itself and lets an impossible one
            # (2026-13-01) raise ValueError: a value error, not a traceback.
            raise ConfigError([f"{source}: invalid YAML value: {exc}"]) from None
        finally:
            loader.dispose()
        if node is not None:
            self._index(node, "")

    def _index(self, node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                self.lines.setdefault(child, key_node.start_mark.line + 1)
                if key in keys:
                    self.problem(child, "duplicate key", key_node.start_mark.line + 1)
                keys.add(key)
                self._index(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                self.lines.setdefault(child, item.start_mark.line + 1)
                self._index(item, child)

    def problem(self, path: str, message: str, line: int | None = None) -> None:
        line = line or self._line_of(path)
        where = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{where}: {path}: {message}")

    def _line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


# ---------------------------------------------------------------- converters


def kind_of(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, got {kind_of(value)} {value!r}")
    return value


def int_in(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be a whole number, got {kind_of(value)} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return convert


def seconds(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"must be a number of seconds, got {kind_of(value)} {value!r}")
        if not low < value <= high:
            raise ValueError(f"must be more than {low} and at most {high} seconds, got {value}")
        return float(value)

    return convert


def choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


def action(value: Any) -> Action:
    return Action(choice(*(a.value for a in Action))(value))


def list_of(
    item: Callable[[Any], T], *, allow_empty: bool = True
) -> Callable[[Any], tuple[T, ...]]:
    def convert(value: Any) -> tuple[T, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TypeError(f"must be a list, got {kind_of(value)}")
        if not value and not allow_empty:
            raise ValueError("must not be empty")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"item {i + 1}: {exc}") from None
        return tuple(out)

    return convert


def endpoint(default_port: int) -> Callable[[Any], Endpoint]:
    def convert(value: Any) -> Endpoint:
        if not isinstance(value, str):
            raise TypeError(f"must be 'ADDRESS:PORT', got {kind_of(value)} {value!r}")
        return parse_endpoint(value, default_port)

    return convert


def network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise TypeError(f"must be an address or CIDR prefix, got {kind_of(value)} {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network") from None


def ip_address(version: int) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv{version} address") from None
        if address.version != version:
            raise ValueError(f"{value!r} is not an IPv{version} address")
        return str(address)

    return convert


def domain_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"must be a non-empty string, got {kind_of(value)} {value!r}")
    return value.strip()


def label(value: Any) -> str:
    text = domain_name(value)
    if not text.replace("-", "").replace("_", "").isalnum() or not text.isascii():
        raise ValueError(f"{text!r} may only hold letters, digits, '-' and '_'")
    return text.lower()


def ede(value: Any) -> int:
    if isinstance(value, str) and value in EDE_NAMES:
        return EDE_NAMES[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value
    raise ValueError(f"must be one of {', '.join(EDE_NAMES)} or a code 0-65535, got {value!r}")


# ------------------------------------------------------------------ sections


def list_id(value: Any) -> str:
    if not isinstance(value, str) or not LIST_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a list id ([a-z0-9][a-z0-9-]*)")
    return value


def url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value if value.endswith("/") else value + "/"


def public_key(value: Any) -> str:
    """The shape of an Ed25519 public key (RFC 8032: 32 bytes), checked
    here so that ``check-config`` names the key; ``sync`` loads it."""
    if not isinstance(value, str):
        raise TypeError(f"must be the authority's base64 public key, got {kind_of(value)}")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != ED25519_KEY_BYTES:
        raise ValueError("not a base64 Ed25519 public key (32 bytes)")
    return value.strip()


def fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"must be a number from 0 to below 1, got {value!r}")
    return float(value)


def scope(value: Any) -> Scope:
    mode = choice("subtree", "exact")(value)
    return Scope.SUBTREE if mode == "subtree" else Scope.EXACT


def optional_endpoint(value: Any) -> Endpoint | None:
    return None if value is None else endpoint(9553)(value)


def number_in(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"must be a number, got {kind_of(value)} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {value}")
        return float(value)

    return convert


def one_line(limit: int) -> Callable[[Any], str]:
    """Text a page shows: one line of at most ``limit`` printable characters."""

    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"must be text, got {kind_of(value)} {value!r}")
        text = value.strip()
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters, got {len(text)}")
        if not text.isprintable():
            raise ValueError("must be one line of printable characters")
        return text

    return convert
