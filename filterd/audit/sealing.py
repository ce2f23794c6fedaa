"""Signed reports: ``filterd report`` signs, ``filterd report --verify`` checks.

A report leaves the operator's hands (mailed, archived, printed): signed
with the node's key (anchor.py), anyone holding the node's registered public
key can tell whether it was changed since, and by the head it states
(``trail.last_seq``, ``trail.head``) whether the node's trail still holds
what the report was made from.

- JSON: the report carries a ``signature`` member over its canonical form
  (sync/signed.py), so it stays valid JSON and survives re-indentation.
- CSV and HTML: the signature covers the exact UTF-8 bytes before a last
  line that carries it, a CSV row ``signature,,ed25519,KEY_ID PUBLIC VALUE``
  or an HTML comment ``<!-- filterd-signature ed25519 KEY_ID PUBLIC VALUE
  -->`` (after ``</html>``: the page stays well-formed).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from filterd.sync.model import SyncError, key_id, public_key_text
from filterd.sync.signed import check, sign

CSV_MARK: Final = "signature,,ed25519,"
HTML_MARK: Final = "<!-- filterd-signature ed25519 "


@dataclass(frozen=True, slots=True)
class Checked:
    """A report whose signature verified."""

    format: str
    key_id: str
    last_seq: int | None
    """The trail head the report states (None: not found in this format)."""
    head: str | None


def seal(text: str, fmt: str, private: Ed25519PrivateKey) -> str:
    """``text`` (a rendered report) signed by ``private``."""
    if fmt == "json":
        return json.dumps(sign(json.loads(text), private), indent=2, ensure_ascii=False) + "\n"
    public = private.public_key()
    value = base64.b64encode(private.sign(text.encode())).decode()
    words = f"{key_id(public)} {public_key_text(public)} {value}"
    return text + (f"{CSV_MARK}{words}\n" if fmt == "csv" else f"{HTML_MARK}{words} -->\n")


def verify_report(text: str, trusted: Ed25519PublicKey) -> Checked:
    """Check a signed report against the node's trusted key; ``SyncError`` if
    it is not signed, signed by another key, or altered since."""
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise SyncError("json", "not a JSON report") from None
        if not isinstance(document, dict):
            raise SyncError("json", "not a JSON report")
        check(document, trusted)
        trail = document.get("trail") if isinstance(document.get("trail"), dict) else {}
        assert isinstance(trail, dict)
        return Checked(
            "json", key_id(trusted), _int(trail.get("last_seq")), _str(trail.get("head"))
        )
    body, _, last = text.rstrip("\n").rpartition("\n")
    body += "\n"
    if last.startswith(CSV_MARK):
        fmt, words = "csv", last[len(CSV_MARK) :].split()
    elif last.startswith(HTML_MARK) and last.endswith("-->"):
        fmt, words = "html", last[len(HTML_MARK) : -3].split()
    else:
        raise SyncError("signature", "not signed (no signature line at the end)")
    if len(words) != 3:
        raise SyncError("signature", "malformed signature line")
    signer, _, value = words
    if signer != key_id(trusted):
        raise SyncError("key", f"signed with key {signer!r}, not the trusted {key_id(trusted)!r}")
    try:
        trusted.verify(base64.b64decode(value, validate=True), body.encode())
    except (binascii.Error, ValueError, InvalidSignature):
        raise SyncError("signature", "signature does not verify (altered after signing)") from None
    last_seq, head = _csv_head(body) if fmt == "csv" else (None, None)
    return Checked(fmt, signer, last_seq, head)


def _csv_head(body: str) -> tuple[int | None, str | None]:
    fields = {
        row[2]: row[3]
        for row in csv.reader(io.StringIO(body))
        if len(row) == 4 and row[0] == "trail" and row[1] == ""
    }
    seq = fields.get("last_seq", "")
    return (int(seq) if seq.isdigit() else None), fields.get("head")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
