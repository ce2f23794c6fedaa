"""``filterd authority`` end to end: the CLI as processes, a real server, real HTTP.

What an operator's filterd and a Department's staff rely on, checked over
sockets: tokens are required, the manifest verifies with the key printed by
``keygen``, conditional GETs work, snapshots and deltas download as gzip and
match the manifest, odd paths never reach a file, receipts are recorded (or
refused with the documented status), the compliance view reports the right
serials and lag, its page renders in a real browser (headless Chromium, when
installed), HTTPS works with the certificate given, a publication pushes a
signed notification to a node, and a real ``filterd run`` node syncs from it,
enforces, acknowledges and shows up in the compliance view.

Every server started here is stopped by its PID in a fixture finalizer, the
CLI and the browser run under a timeout, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import queue
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import dns.edns
import dns.message
import dns.rcode
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from filterd.authority.notify import notification
from filterd.authority.store import Store
from filterd.sync.model import (
    Receipt,
    open_envelope,
    parse_manifest,
    parse_notify,
    parse_time,
    sha256_hex,
)
from filterd.sync.snapshot import apply_delta, parse_delta
from tests.integration.conftest import DaemonFactory, synced_node
from tests.peers.authoritative import FakeUpstream
from tests.peers.browser import rendered_dom
from tests.peers.processes import wait_until
from tests.peers.reference_authority import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Data,
    Server,
    ServerFactory,
    cli,
    make_data,
)
from tests.peers.web_thread import ThreadedApp

NATIONAL = """#filterd-list 1
casino.example.net   block        gambling  QĐ-123/2026 ngày 01/02/2026
games.example        block-exact  games     -
safe.adult.example   allow        -         QĐ-045/2026
wild.example         block-below  fraud     QĐ-077/2026
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two publications of ``national``, an unpublished ``province-hn``, three
    operators (``fpt`` never sends a receipt), served with an admin token and
    the loopback-open compliance page. Tests here must not publish."""
    directory = tmp_path_factory.mktemp("authority")
    data = make_data(directory)
    for operator in ("vnpt-hanoi", "viettel", "fpt"):
        data.add_operator(operator)
    cli("init", "--dir", data.path, "--list", "national")
    cli("init", "--dir", data.path, "--list", "province-hn")
    source = directory / "national.txt"
    source.write_text(NATIONAL)
    cli("import", "--dir", data.path, "--list", "national", source)
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    cli("add", "--dir", data.path, "--list", "national", "new-casino.example", "block", "gambling")
    cli("remove", "--dir", data.path, "--list", "national", "games.example")
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    options = ("--admin-token-file", str(data.admin_token_file), "--compliance-loopback-open")
    server = Server(data, *options)
    try:
        yield server.start()
    finally:
        server.stop()


def receipt(data: Data, operator: str, node: str, serial: int, lag: int) -> dict[str, Any]:
    """A receipt for ``serial`` of ``national``, applied ``lag`` seconds after publication."""
    published = data.history("national")[serial - 1]
    applied = parse_time(published["published_at"], "published_at") + timedelta(seconds=lag)
    document = Receipt(
        operator, node, "national", serial, applied, published["sha256"], 4, "filterd 0.1.0"
    )
    return document.to_json()


# ---------------------------------------------------------------- tests


def test_every_v1_request_needs_an_operator_token(served: Server) -> None:
    paths = [
        "/v1/lists/national/manifest",
        "/v1/lists/national/snapshots/2.gz",
        "/v1/lists/national/deltas/1-2.gz",
        "/v1/lists/no-such-list/manifest",
    ]
    for path in paths:
        for token in (None, "wrong-token", served.data.tokens["fpt"] + "x"):
            status, headers, _ = served.request("GET", path, token=token)
            assert status == 401, (path, token)
            assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = served.request("GET", paths[0], headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert status == 401
    status, _, _ = served.request("POST", "/v1/receipts", token="wrong", body=b"{}")
    assert status == 401
    for operator in ("vnpt-hanoi", "viettel", "fpt"):
        assert served.get(paths[0], operator)[0] == 200
    # The admin token is not an operator's, and an operator's is not the admin's.
    admin = served.data.admin_token
    assert served.request("GET", paths[0], token=admin)[0] == 401
    assert served.request("GET", "/v1/compliance", token=served.data.tokens["fpt"])[0] == 401
    assert served.request("GET", "/v1/compliance")[0] == 401


def test_manifest_verifies_and_files_match_it(served: Server) -> None:
    status, envelope = served.get("/v1/lists/national/manifest")
    assert status == 200
    assert envelope == (served.data.path / "lists/national/manifest.json").read_bytes()
    manifest = parse_manifest(open_envelope(envelope, served.data.public_key), "national")
    assert (manifest.serial, manifest.entries) == (2, 4)
    assert [(d.base, d.path) for d in manifest.deltas] == [(1, "lists/national/deltas/1-2.gz")]
    assert manifest.expires_at - manifest.published_at == timedelta(days=7)

    def download(path: str) -> bytes:
        status, headers, body = served.request(
            "GET", "/v1/" + path, token=served.data.tokens["fpt"]
        )
        assert status == 200, path
        assert headers["Content-Type"] == "application/gzip"
        assert "Content-Encoding" not in headers  # no HTTP layer may inflate it
        assert int(headers["Content-Length"]) == len(body)
        return gzip.decompress(body)

    snapshot = download(manifest.snapshot.path)
    assert (sha256_hex(snapshot), len(snapshot)) == (
        manifest.snapshot.sha256,
        manifest.snapshot.size,
    )
    assert b"new-casino.example block gambling -\n" in snapshot
    assert b"games.example" not in snapshot
    previous = download("lists/national/snapshots/1.gz")  # kept for operators still on 1
    ref = manifest.deltas[0]
    text = download(ref.path)
    assert (sha256_hex(text), len(text)) == (ref.sha256, ref.size)
    assert apply_delta(previous, parse_delta(text, 1, 2)) == snapshot

    head = served.request("HEAD", "/v1/" + ref.path, token=served.data.tokens["fpt"])
    assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) > 0
    assert served.get("/v1/lists/national/snapshots/3.gz")[0] == 404
    assert served.get("/v1/lists/national/deltas/2-1.gz")[0] == 404
    assert served.get("/v1/lists/no-such-list/manifest")[0] == 404
    assert served.get("/v1/lists/province-hn/manifest")[0] == 404  # never published


def test_conditional_manifest_requests(served: Server) -> None:
    token = served.data.tokens["viettel"]
    path = "/v1/lists/national/manifest"
    status, headers, body = served.request("GET", path, token=token)
    etag = headers["ETag"]
    assert status == 200 and etag.startswith('"') and etag.endswith('"')
    for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, body = served.request(
            "GET", path, token=token, headers={"If-None-Match": condition}
        )
        assert (status, body, headers["ETag"]) == (304, b"", etag), condition
    status, _, body = served.request("GET", path, token=token, headers={"If-None-Match": '"old"'})
    assert status == 200 and body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/lists/national/snapshots/../../../authority.key",
        "/v1/lists/national/snapshots/..%2f..%2f..%2fauthority.key",
        "/v1/lists/national/snapshots/%2e%2e%2f%2e%2e%2fmanifest.json",
        "/v1/lists/national/snapshots/%2Fetc%2Fpasswd",
        "/v1/lists/..%2F..%2Fauthority.key/manifest",
        "/v1/lists/../../authority.key",
        "/v1/lists/national/snapshots/..\\..\\..\\authority.key",
        "/v1/lists/national/snapshots/02.gz",
        "/v1/lists/national/snapshots/2.gz%00",
        "/v1/lists/national/deltas/1-2.gz/../../../../operators.json",
        "/v1/lists/NATIONAL/manifest",
        "/v1/lists/national/staging.list",
        "/v1/lists/national/history.jsonl",
        "//etc/passwd",
        "/authority.key",
    ],
)
def test_paths_outside_the_protocol_reach_no_file(served: Server, path: str) -> None:
    status, _, body = served.request("GET", path, token=served.data.tokens["vnpt-hanoi"])
    assert status in (400, 404), (path, status)
    assert b"PRIVATE KEY" not in body and b"token_sha256" not in body


def test_receipts(served: Server) -> None:
    data = served.data
    good = receipt(data, "vnpt-hanoi", "resolver-receipts", 2, 3)
    assert served.post_receipt("vnpt-hanoi", good) == 204
    lines = (data.path / "receipts.jsonl").read_text().splitlines()
    recorded = json.loads(lines[-1])
    assert recorded["node"] == "resolver-receipts"
    assert recorded["authenticated_operator"] == "vnpt-hanoi" and "received_at" in recorded

    # Another operator's receipt, sent with vnpt-hanoi's token.
    assert served.post_receipt("vnpt-hanoi", dict(good, operator="fpt")) == 403
    # Malformed documents.
    token = data.tokens["vnpt-hanoi"]
    malformed: list[object] = [
        dict(good, serial="2"),
        dict(good, sha256="x"),
        dict(good, type="other"),
        {k: v for k, v in good.items() if k != "node"},
        [],
    ]
    for bad in malformed:
        body = json.dumps(bad).encode()
        assert served.request("POST", "/v1/receipts", token=token, body=body)[0] == 422
    assert served.request("POST", "/v1/receipts", token=token, body=b"{not json")[0] == 422
    assert served.post_receipt("vnpt-hanoi", dict(good, list="no-such-list")) == 404
    # Oversized, announced and chunked.
    padded = dict(good, software="x" * 100, padding="y" * 17000)
    assert served.post_receipt("vnpt-hanoi", padded) == 413
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/v1/receipts",
            body=iter([b" " * 4096] * 5),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        assert connection.getresponse().status == 413
    finally:
        connection.close()
    assert len((data.path / "receipts.jsonl").read_text().splitlines()) == len(lines)


def test_compliance_json(served: Server) -> None:
    data = served.data
    assert (
        served.post_receipt("vnpt-hanoi", receipt(data, "vnpt-hanoi", "resolver-01", 1, 5)) == 204
    )
    assert (
        served.post_receipt("vnpt-hanoi", receipt(data, "vnpt-hanoi", "resolver-01", 2, 7)) == 204
    )
    stale = receipt(data, "viettel", "hcm-02", 1, 90)
    assert served.post_receipt("viettel", stale) == 204
    wrong = dict(receipt(data, "viettel", "hcm-03", 2, 1), sha256="0" * 64)
    assert served.post_receipt("viettel", wrong) == 204

    status, headers, body = served.request("GET", "/v1/compliance", token=data.admin_token)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    report = json.loads(body)
    history = data.history("national")
    assert report["lists"]["national"]["serial"] == 2
    assert report["lists"]["national"]["sha256"] == history[1]["sha256"]
    assert report["lists"]["province-hn"] is None
    rows = {(r["operator"], r["node"]): r for r in report["nodes"] if r["list"] == "national"}
    current = rows[("vnpt-hanoi", "resolver-01")]
    assert current["enforced_serial"] == 2 and current["published_serial"] == 2
    assert (current["serials_behind"], current["lag_seconds"]) == (0, 7)
    assert current["sha256_matches"] is True and current["compliant"] is True
    assert current["published_at"] == history[1]["published_at"]
    behind = rows[("viettel", "hcm-02")]
    assert (behind["enforced_serial"], behind["serials_behind"], behind["lag_seconds"]) == (
        1,
        1,
        90,
    )
    assert behind["sha256_matches"] is True and behind["compliant"] is False
    assert rows[("viettel", "hcm-03")]["sha256_matches"] is False
    assert report["silent_operators"] == ["fpt"]


def test_compliance_page_needs_the_admin_token_unless_direct_loopback(
    served: Server, start_server: ServerFactory
) -> None:
    admin = served.data.admin_token
    status, headers, page = served.request("GET", "/compliance")  # loopback-open
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src" not in headers["Content-Security-Policy"]
    assert b"<h1>Compliance</h1>" in page
    for proxied in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
        assert served.request("GET", "/compliance", headers=proxied)[0] == 401
        assert served.request("GET", "/compliance", token=admin, headers=proxied)[0] == 200
    rebound = {"Host": f"attacker.example:{served.port}"}
    assert served.request("GET", "/compliance", headers=rebound)[0] == 401
    # The flag opens the page only, never the JSON.
    assert served.request("GET", "/v1/compliance")[0] == 401

    data = served.data
    closed = start_server(data, "--admin-token-file", str(data.admin_token_file))
    assert closed.request("GET", "/compliance")[0] == 401
    assert closed.request("GET", "/compliance", token=admin)[0] == 200
    no_admin = start_server(data)
    assert no_admin.request("GET", "/v1/compliance", token=admin)[0] == 403


def test_compliance_page_renders_in_chromium(served: Server, tmp_path: Path) -> None:
    node = "<script>document.title='owned'</script>"
    assert served.post_receipt("viettel", receipt(served.data, "viettel", node, 2, 12)) == 204
    text = rendered_dom(f"{served.url}/compliance", tmp_path / "chromium")
    assert '<table id="nodes">' in text, text
    assert "<title>filterd authority: compliance</title>" in text  # the title was not changed
    assert "&lt;script&gt;document.title='owned'&lt;/script&gt;" in text
    assert "<td>viettel</td>" in text and '<ul id="silent"><li>fpt</li>' in text


def test_status_command(served: Server) -> None:
    out = cli("status", "--dir", served.data.path).stdout
    assert "operators: 3, notify URLs: 0" in out
    assert "list national: staging 4 entries (same as serial 2)" in out
    assert "list province-hn: staging 0 entries (never published)" in out
    assert "deltas from 1" in out


def test_publication_changes_the_etag_and_the_server_stops_cleanly(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    data = make_data(tmp_path)
    token = data.add_operator("vnpt-hanoi")
    cli("init", "--dir", data.path, "--list", "national")
    cli("add", "--dir", data.path, "--list", "national", "casino.example", "block")
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    server = start_server(data)
    path = "/v1/lists/national/manifest"
    etag = server.request("GET", path, token=token)[1]["ETag"]
    again = cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    assert "unchanged since serial 1" in again.stdout
    status, headers, body = server.request(
        "GET", path, token=token, headers={"If-None-Match": etag}
    )
    assert status == 200 and headers["ETag"] != etag
    assert parse_manifest(open_envelope(body, data.public_key), "national").serial == 2
    assert server.stop() == 0


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "filterd test authority")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serves_over_https(tmp_path: Path, start_server: ServerFactory) -> None:
    data = make_data(tmp_path)
    token = data.add_operator("vnpt-hanoi")
    cli("init", "--dir", data.path, "--list", "national")
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    cert, key = self_signed(tmp_path)
    client = ssl.create_default_context(cafile=str(cert))
    options = ("--tls-cert", str(cert), "--tls-key", str(key))
    server = start_server(data, *options, tls=client)
    status, _, body = server.request("GET", "/v1/lists/national/manifest", token=token)
    assert status == 200
    assert parse_manifest(open_envelope(body, data.public_key), "national").serial == 1
    assert "serving https://127.0.0.1:" in server.log
    untrusting = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10)
    with contextlib.closing(untrusting), pytest.raises(ssl.SSLCertVerificationError):
        untrusting.request("GET", "/healthz")


class Receiver:
    """A node's ``POST /v1/notify`` on 127.0.0.1 (port 0), in a thread of its own:
    the CLI that pushes is another process, so this one must keep answering."""

    def __init__(self) -> None:
        self.bodies: queue.Queue[bytes] = queue.Queue()
        self.url = ""
        app = web.Application()
        app.router.add_post("/v1/notify", self._notify)
        self._server = ThreadedApp(app, "notify-receiver")

    async def _notify(self, request: web.Request) -> web.Response:
        self.bodies.put(await request.read())
        return web.Response(status=202, text="pulling\n")

    def __enter__(self) -> Self:
        self.url = f"http://127.0.0.1:{self._server.start(START_TIMEOUT)}"
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.stop(STOP_TIMEOUT)


def closed_port() -> int:
    """A loopback port nothing listens on (a node that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_publish_pushes_a_signed_notification(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    down = f"http://127.0.0.1:{closed_port()}/"
    with Receiver() as node:
        data.add_operator("vnpt-hanoi", node.url)
        data.add_operator("fpt", down)
        cli("init", "--dir", data.path, "--list", "national")
        cli("add", "--dir", data.path, "--list", "national", "casino.example", "block")
        out = cli("publish", "--dir", data.path, "--list", "national").stdout
        assert f"accepted: vnpt-hanoi {node.url}/v1/notify (HTTP 202)" in out
        assert f"FAILED: fpt {down}v1/notify" in out
        assert "1 of 2 nodes accepted" in out
        notify = parse_notify(open_envelope(node.bodies.get(timeout=10), data.public_key))
        assert (notify.list_id, notify.serial) == ("national", 1)

        cli("add", "--dir", data.path, "--list", "national", "more.example", "block")
        cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
        assert node.bodies.empty()
        again = cli("notify", "--dir", data.path, "--list", "national", status=1)
        assert "FAILED: fpt" in again.stdout
        notify = parse_notify(open_envelope(node.bodies.get(timeout=10), data.public_key))
        assert notify.serial == 2


def test_cli_errors_are_one_line_with_the_documented_status(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    cli("keygen", "--dir", data.path, status=2)
    cli("status", "--dir", tmp_path / "missing", status=2)
    cli("publish", "--dir", data.path, "--list", "national", status=2)
    cli("init", "--dir", data.path, "--list", "Bad_Id", status=2)
    cli("init", "--dir", data.path, "--list", "national")
    cli("add", "--dir", data.path, "--list", "national", "casino.example", "forbid", status=2)
    cli("add", "--dir", data.path, "--list", "national", "not a name", "block", status=2)
    cli("remove", "--dir", data.path, "--list", "national", "casino.example", status=2)
    cli("import", "--dir", data.path, "--list", "national", tmp_path / "absent.txt", status=2)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    cli("import", "--dir", data.path, "--list", "national", empty, status=2)
    cli("operator", "add", "--dir", data.path, "--id", "x", "--notify", "ftp://x", status=2)
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")

    manifest = data.path / "lists/national/manifest.json"
    verified = cli("verify", "--public-key", data.path / "authority.pub", manifest)
    assert "verified: filterd-manifest" in verified.stdout
    text = (data.path / "authority.pub").read_text().strip()
    assert '"serial": 1' in cli("verify", "--public-key", text, manifest).stdout
    other = make_data(tmp_path / "other")
    wrong_key = cli("verify", "--public-key", other.path / "authority.pub", manifest, status=1)
    assert "does not verify (key)" in wrong_key.stderr
    envelope = json.loads(manifest.read_bytes())
    envelope["payload"] = envelope["payload"][:-8] + "AAAAAAA="
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(envelope))
    cli("verify", "--public-key", text, tampered, status=1)
    cli("verify", "--public-key", "not-a-key", manifest, status=2)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused = cli("serve", "--dir", data.path, "--listen", f"127.0.0.1:{port}", status=1)
        assert "cannot listen" in refused.stderr
    cli("serve", "--dir", data.path, "--listen", "127.0.0.1:0", "--tls-cert", manifest, status=2)
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    cli(
        "serve",
        "--dir",
        data.path,
        "--listen",
        "127.0.0.1:0",
        "--admin-token-file",
        short,
        status=2,
    )


def test_a_real_filterd_node_pulls_enforces_acknowledges_and_is_notified(
    tmp_path: Path,
    start_server: ServerFactory,
    make_daemon: DaemonFactory,
    upstream: FakeUpstream,
) -> None:
    """Both ends for real: ``filterd run`` syncing from ``filterd authority serve``."""
    data = make_data(tmp_path)
    cli("init", "--dir", data.path, "--list", "national")
    cli("add", "--dir", data.path, "--list", "national", "casino.example", "block", "gambling")
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    server = start_server(data, "--admin-token-file", str(data.admin_token_file))
    daemon = synced_node(make_daemon, data, server, upstream)
    daemon.start()
    assert daemon.query("www.casino.example").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("games.example").rcode() == dns.rcode.NOERROR

    cli("add", "--dir", data.path, "--list", "national", "games.example", "block-exact", "games")
    published = cli("publish", "--dir", data.path, "--list", "national").stdout
    assert f"accepted: vnpt-hanoi http://{daemon.admin}/v1/notify" in published
    # The node's interval is an hour: only the notification makes it pull now.
    wait_until(lambda: daemon.query("games.example").rcode() == dns.rcode.NXDOMAIN)

    def row() -> dict[str, Any]:
        status, _, body = server.request("GET", "/v1/compliance", token=data.admin_token)
        assert status == 200
        nodes = [n for n in json.loads(body)["nodes"] if n["node"] == "resolver-01"]
        return nodes[0] if nodes else {}

    wait_until(lambda: row().get("enforced_serial") == 2)
    current = row()
    assert current["operator"] == "vnpt-hanoi" and current["serials_behind"] == 0
    assert current["sha256_matches"] is True and current["lag_seconds"] >= 0


def ede(answer: dns.message.Message) -> tuple[int, str]:
    """The Extended DNS Error (RFC 8914) of an answer: (code, extra text)."""
    options = [o for o in answer.options if isinstance(o, dns.edns.EDEOption)]
    assert len(options) == 1, answer
    return int(options[0].code), options[0].text or ""


def test_national_provincial_and_local_lists_are_merged_with_their_own_actions(
    tmp_path: Path,
    start_server: ServerFactory,
    make_daemon: DaemonFactory,
    upstream: FakeUpstream,
) -> None:
    """Two authority lists synced from one authority, a local list and an
    allowlist, enforced together: each rule keeps its source and category,
    actions follow the category, then the list."""
    data = make_data(tmp_path)
    for list_id, entries in (
        ("national", [("casino.example", "gambling"), ("csam-site.example", "csam")]),
        ("province-hn", [("games-hn.example", "games")]),
    ):
        cli("init", "--dir", data.path, "--list", list_id)
        for name, category in entries:
            cli("add", "--dir", data.path, "--list", list_id, name, "block", category)
        cli("publish", "--dir", data.path, "--list", list_id, "--no-notify")
    server = start_server(data, "--admin-token-file", str(data.admin_token_file))
    lists = """\
  - {name: national, sync: national, mandatory: true}
  - {name: province-hn, sync: province-hn, mandatory: true, action: refused}
  - {name: local, path: local.txt, format: domains, category: ads}
  - {name: exceptions, path: allow.txt, format: domains, kind: allow}
"""
    extra = "blocking: {sinkhole: {ipv4: 192.0.2.80}, category_actions: {gambling: sinkhole}}\n"
    daemon = synced_node(make_daemon, data, server, upstream, lists=lists, extra=extra)
    (daemon.directory / "local.txt").write_text("local-ads.example\n")
    # The operator's allowlist lifts its own block, not the authority's.
    (daemon.directory / "allow.txt").write_text("ok.local-ads.example\ncsam-site.example\n")
    upstream.add("ok.local-ads.example", "A", "192.0.2.7")
    upstream.add("csam-site.example", "A", "192.0.2.8")
    daemon.start()

    casino = daemon.query("www.casino.example")  # category action: sinkhole
    assert [str(rr) for rr in casino.answer[0]] == ["192.0.2.80"]
    assert ede(casino) == (16, "list=national version=1 category=gambling")
    csam = daemon.query("csam-site.example")  # mandatory: the allowlist cannot lift it
    assert csam.rcode() == dns.rcode.NXDOMAIN
    assert ede(csam) == (16, "list=national version=1 category=csam")
    games = daemon.query("games-hn.example")  # the province list's action
    assert games.rcode() == dns.rcode.REFUSED
    assert ede(games) == (16, "list=province-hn version=1 category=games")
    local = daemon.query("local-ads.example")  # the operator's own list: EDE 15
    assert local.rcode() == dns.rcode.NXDOMAIN
    assert ede(local)[0] == 15 and "list=local" in ede(local)[1]
    assert "category=ads" in ede(local)[1]
    assert str(daemon.query("ok.local-ads.example").answer[0][0]) == "192.0.2.7"

    metrics = daemon.metrics()
    blocked = {k: v for k, v in metrics.items() if k.startswith("filterd_blocked_total") and v}
    assert blocked == {
        'filterd_blocked_total{action="sinkhole",category="gambling",list="national"}': 1,
        'filterd_blocked_total{action="nxdomain",category="csam",list="national"}': 1,
        'filterd_blocked_total{action="refused",category="games",list="province-hn"}': 1,
        'filterd_blocked_total{action="nxdomain",category="ads",list="local"}': 1,
    }
    for list_id in ("national", "province-hn"):
        assert metrics[f'filterd_sync_serial{{list="{list_id}"}}'] == 1
    wait_until(
        lambda: all(
            daemon.metrics()[f'filterd_sync_receipts_total{{list="{list_id}",result="sent"}}'] == 1
            for list_id in ("national", "province-hn")
        )
    )


def test_lists_from_two_authorities_each_verified_with_its_own_key(
    tmp_path: Path,
    start_server: ServerFactory,
    make_daemon: DaemonFactory,
    upstream: FakeUpstream,
) -> None:
    """The ministry publishes the national list and a provincial Department its
    own, each with its own key and server: one node enforces both, takes each
    one's notifications, and refuses a Department's notification for a list
    the ministry publishes."""
    ministry, department = make_data(tmp_path / "ministry"), make_data(tmp_path / "hanoi")
    for data, list_id, name in (
        (ministry, "national", "casino.example"),
        (department, "province-hn", "games-hn.example"),
    ):
        cli("init", "--dir", data.path, "--list", list_id)
        cli("add", "--dir", data.path, "--list", list_id, name, "block", "gambling")
        cli("publish", "--dir", data.path, "--list", list_id, "--no-notify")
    ministry_server, department_server = start_server(ministry), start_server(department)
    department_key = (department.path / "authority.pub").read_text().strip()
    lists = """\
  - {name: national, sync: national, mandatory: true}
  - {name: province-hn, sync: province-hn, mandatory: true, authority: so-tttt-hn}
"""
    extra = f"""authorities:
  so-tttt-hn:
    url: "{department_server.url}/v1/"
    token_file: hanoi.token
    public_key: "{department_key}"
    operator: vnpt-hanoi
    timeout: 5
"""
    daemon = synced_node(make_daemon, ministry, ministry_server, upstream, lists=lists, extra=extra)
    token = department.add_operator("vnpt-hanoi", f"http://{daemon.admin}")
    (daemon.directory / "hanoi.token").write_text(token + "\n")
    upstream.add("new-hn.example", "A", "192.0.2.9")
    daemon.start()
    assert ede(daemon.query("casino.example")) == (16, "list=national version=1 category=gambling")
    games = daemon.query("games-hn.example")
    assert ede(games) == (16, "list=province-hn version=1 category=gambling")

    hanoi = ("--dir", department.path, "--list", "province-hn")
    cli("add", *hanoi, "new-hn.example", "block", "games")
    published = cli("publish", *hanoi).stdout
    assert f"accepted: vnpt-hanoi http://{daemon.admin}/v1/notify" in published
    wait_until(lambda: daemon.query("new-hn.example").rcode() == dns.rcode.NXDOMAIN)

    # Signed by the Department, but for the ministry's list: refused.
    forged = notification("national", 9, Store(department.path).private_key())
    assert daemon.post_notify(forged) == 403
    metrics = daemon.metrics()
    assert metrics['filterd_sync_serial{list="national"}'] == 1
    assert metrics['filterd_sync_serial{list="province-hn"}'] == 2
    assert metrics["filterd_sync_notifies_refused_total"] == 1
    assert metrics['filterd_sync_notifies_total{list="province-hn"}'] == 1


def test_mutual_tls_admits_only_nodes_with_a_certificate(
    tmp_path: Path,
    start_server: ServerFactory,
    make_daemon: DaemonFactory,
    upstream: FakeUpstream,
) -> None:
    """``serve --tls-client-ca``: a node needs the authority's CA (``sync.ca_file``)
    and a certificate of its own (``sync.client_cert``/``client_key``)."""
    data = make_data(tmp_path)
    cli("init", "--dir", data.path, "--list", "national")
    cli("add", "--dir", data.path, "--list", "national", "casino.example", "block", "gambling")
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    (tmp_path / "server").mkdir()
    (tmp_path / "node").mkdir()
    cert, key = self_signed(tmp_path / "server")
    node_cert, node_key = self_signed(tmp_path / "node")
    client = ssl.create_default_context(cafile=str(cert))
    client.load_cert_chain(str(node_cert), str(node_key))
    options = ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(node_cert))
    server = start_server(data, *options, tls=client)
    tls = f"  ca_file: {cert}\n"
    mutual = tls + f"  client_cert: {node_cert}\n  client_key: {node_key}\n"
    daemon = synced_node(make_daemon, data, server, upstream, sync_extra=tls)

    def failures() -> float:
        if daemon.http("/healthz")[0] != 200:
            return 0  # the admin endpoint is not up yet
        metrics = daemon.metrics()
        return sum(v for k, v in metrics.items() if k.startswith("filterd_sync_failures_total"))

    daemon.start(wait_ready=False)  # no certificate: refused, no list, not ready
    wait_until(lambda: failures() >= 1)
    assert daemon.http("/readyz")[0] == 503
    daemon.stop()
    daemon.write_config(daemon.config_path.read_text().replace(tls, mutual))
    daemon.start()
    assert daemon.query("casino.example").rcode() == dns.rcode.NXDOMAIN
