"""FakeUpstream: a scriptable authoritative DNS server on loopback, for end-to-end tests.

Contract:

* Real sockets only: one UDP socket and one TCP listener on the same port of
  `host` (127.0.0.1 by default, ::1 works too), port 0 (ephemeral) by default.
* It runs its own asyncio event loop in a background thread, so synchronous
  tests drive it; every public method is thread-safe and may be called while
  it is running (records and behaviours can be changed between queries).
* Answers are authoritative: QR and AA set, RA clear, RD copied, the question
  section echoed byte-for-byte (0x20 case preserved), answer owner names spelt
  as the question spelt them.  A name with no records -> NXDOMAIN; a name with
  records of other types (or an empty non-terminal) -> NOERROR/NODATA.  Both
  negative answers carry an SOA in the authority section: the closest
  enclosing SOA among the added records, else a default root SOA whose TTL
  and MINIMUM are `negative_ttl` (60 unless configured).  CNAMEs are chased
  through the added data.
* EDNS0: a query with an OPT record gets an OPT record back advertising 1232
  bytes, with the DO bit copied; a query without OPT gets none.  UDP answers
  larger than the client's limit (512 without EDNS, else min(client, 1232))
  are truncated (TC=1, no records); TCP answers are never truncated.
* TCP uses RFC 7766 framing (2-byte length), several queries per connection,
  answered concurrently (a delayed answer does not block later ones).
* Behaviours, set per name with `behave()` (case-insensitive, "*" = any name):
  delay, drop, servfail, refused, udp_truncate, wrong_id, wrong_question
  (optionally followed by the correct reply), limited to `times` queries.
* Every parsed query is logged (`log`, `queries_udp`, `queries_tcp`) *before*
  its answer is sent, so once a client has its answer the log has the query.
* `stop()` closes every socket, cancels every task, closes the loop and joins
  the thread; it raises if the thread does not end.  start/stop may repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, cast

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from tests.peers.ports import bind_udp_tcp, format_endpoint

Transport = Literal["udp", "tcp"]

EDNS_PAYLOAD = 1232
"""The UDP payload size this server advertises and never exceeds (DNS flag day 2020)."""

DEFAULT_NEGATIVE_TTL = 60
DEFAULT_TTL = 300
WRONG_QUESTION_NAME = "wrong-question.invalid."
"""The question name sent back by a `wrong_question` reply."""

_WRONG_ID_XOR = 0x5A5A  # any non-zero mask guarantees a different ID
_CLASSIC_UDP_LIMIT = 512
_TYPE_OPT = 41
_TYPE_CNAME = 5
_TYPE_SOA = 6
_TYPE_ANY = 255
_CNAME_HOPS = 8
_DO_BIT = 0x8000
_OPCODE_QUERY = 0
_STOP_TIMEOUT = 10.0

# dnslib ships no type information: its objects are `Any` and stay inside this module.
_DnsObj = Any


class QueryRecord(NamedTuple):
    """One query as the server received it (qname exactly as sent, trailing dot)."""

    transport: Transport
    qname: str
    qtype: str
    had_edns: bool
    do_bit: bool
    source_port: int
    query_id: int


@dataclasses.dataclass
class Behaviour:
    """How to misbehave for one name; see `FakeUpstream.behave`."""

    delay: float = 0.0
    drop: bool = False
    servfail: bool = False
    refused: bool = False
    udp_truncate: bool = False
    wrong_id: bool = False
    wrong_question: bool = False
    then_correct: bool = False
    times: int | None = None
    mangle: Callable[[bytes], bytes] | None = None


def _key(name: str) -> str:
    """Lookup key for a name: lower case, no trailing dot; the root is ''."""
    return name.rstrip(".").lower()


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _qtype_text(qtype: int) -> str:
    text = QTYPE.get(qtype)
    return text if isinstance(text, str) else f"TYPE{qtype}"


def _parse_zone(text: str, origin: str, ttl: int) -> list[_DnsObj]:
    """Zone-file text -> dnslib RRs, with dnslib's errors turned into ValueError."""
    try:
        return list(RR.fromZone(text, origin=origin, ttl=ttl))
    except Exception as exc:
        raise ValueError(f"cannot parse zone text {text!r}: {exc}") from exc


def _rr_name(rr: _DnsObj) -> str:
    return str(rr.rname)


def _rr_type(rr: _DnsObj) -> int:
    return int(rr.rtype)


def _renamed(rr: _DnsObj, owner: _DnsObj) -> _DnsObj:
    """A copy of `rr` owned by `owner` (a DNSLabel spelt as the client spelt it)."""
    return RR(rname=owner, rtype=rr.rtype, rclass=rr.rclass, ttl=rr.ttl, rdata=rr.rdata)


class FakeUpstream:
    """An authoritative server with programmable records and failures; see module doc."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        negative_ttl: int = DEFAULT_NEGATIVE_TTL,
        soa: str | None = None,
    ) -> None:
        """`soa` is one zone-file line for the default negative-answer SOA."""
        self._host = host
        self._requested_port = port
        self._port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[str, list[_DnsObj]] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self._log: list[QueryRecord] = []
        if soa is None:
            soa = (
                f". {negative_ttl} IN SOA ns.fake-upstream.invalid. "
                f"hostmaster.fake-upstream.invalid. 1 3600 600 86400 {negative_ttl}"
            )
        parsed = _parse_zone(soa, ".", negative_ttl)
        if len(parsed) != 1 or _rr_type(parsed[0]) != _TYPE_SOA:
            raise ValueError(f"soa must be exactly one SOA record, got {soa!r}")
        self._default_soa: _DnsObj = parsed[0]
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # ----------------------------------------------------------------- data

    def add(self, name: str, rtype: str, rdata: str, ttl: int = DEFAULT_TTL) -> Self:
        """Add one record, e.g. add("www.example.com", "MX", "10 mail.example.com.")."""
        return self._add_rrs(_parse_zone(f"{_absolute(name)} {ttl} IN {rtype} {rdata}", ".", ttl))

    def add_zone_text(self, text: str, origin: str = ".", ttl: int = DEFAULT_TTL) -> Self:
        """Add zone-file lines ($ORIGIN, $TTL, relative names, '@' all work).

        An SOA added here becomes the negative-answer SOA for names below it.
        """
        return self._add_rrs(_parse_zone(text, _absolute(origin), ttl))

    def add_large_txt(self, name: str, min_bytes: int = 6000) -> Self:
        """Enough distinct 200-byte TXT records at `name` for a > `min_bytes` answer.

        The default (> 4096 bytes) is larger than any UDP answer this server
        sends, so over UDP it is truncated and only TCP returns it whole.
        """
        chunk = 200
        count = min_bytes // chunk + 1
        lines = [
            f'{_absolute(name)} {DEFAULT_TTL} IN TXT "{i:05d}{"x" * (chunk - 5)}"'
            for i in range(count)
        ]
        return self._add_rrs(_parse_zone("\n".join(lines), ".", DEFAULT_TTL))

    def remove(self, name: str) -> Self:
        """Forget every record owned by `name` (it becomes NXDOMAIN)."""
        with self._lock:
            self._records.pop(_key(name), None)
        return self

    def _add_rrs(self, rrs: Iterable[_DnsObj]) -> Self:
        with self._lock:
            for rr in rrs:
                self._records.setdefault(_key(_rr_name(rr)), []).append(rr)
        return self

    # ----------------------------------------------------------- behaviours

    def behave(
        self,
        name: str,
        *,
        delay: float = 0.0,
        drop: bool = False,
        servfail: bool = False,
        refused: bool = False,
        udp_truncate: bool = False,
        wrong_id: bool = False,
        wrong_question: bool = False,
        then_correct: bool = False,
        times: int | None = None,
        mangle: Callable[[bytes], bytes] | None = None,
    ) -> Self:
        """Misbehave for `name` ("*" = every name without its own behaviour).

        delay: wait that many seconds before answering (other behaviours still apply).
        drop: never answer.  servfail / refused: answer with that RCODE, no records.
        udp_truncate: over UDP answer TC=1 with no records; TCP gets the full answer.
        wrong_id: first send the answer with a different ID; wrong_question: first
        send it with the question name WRONG_QUESTION_NAME; then_correct: after the
        bogus reply(ies), also send the correct one.  mangle: send what it makes of
        the wire reply instead (a malformed answer).  times: apply to that many
        more queries for the name, then answer normally (None = forever).
        Calling it again replaces the name's behaviour; `behave(name)` clears it.
        """
        behaviour = Behaviour(
            delay=delay,
            drop=drop,
            servfail=servfail,
            refused=refused,
            udp_truncate=udp_truncate,
            wrong_id=wrong_id,
            wrong_question=wrong_question,
            then_correct=then_correct,
            times=times,
            mangle=mangle,
        )
        with self._lock:
            if behaviour == Behaviour(times=times):
                self._behaviours.pop(_key(name), None)
            else:
                self._behaviours[_key(name)] = behaviour
        return self

    def clear_behaviours(self) -> Self:
        """Answer every name normally again."""
        with self._lock:
            self._behaviours.clear()
        return self

    def _take_behaviour(self, qkey: str) -> Behaviour | None:
        """The behaviour for this query, consuming one of its `times` if limited."""
        with self._lock:
            key = qkey if qkey in self._behaviours else "*"
            behaviour = self._behaviours.get(key)
            if behaviour is None:
                return None
            if behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    del self._behaviours[key]
            return dataclasses.replace(behaviour)

    # ------------------------------------------------------------------ log

    @property
    def log(self) -> list[QueryRecord]:
        """A snapshot of every query received since start (or `clear_log`)."""
        with self._lock:
            return list(self._log)

    @property
    def queries_udp(self) -> int:
        """Queries received over UDP."""
        return sum(1 for record in self.log if record.transport == "udp")

    @property
    def queries_tcp(self) -> int:
        """Queries received over TCP."""
        return sum(1 for record in self.log if record.transport == "tcp")

    def queries_for(self, name: str) -> list[QueryRecord]:
        """Logged queries whose name matches `name` case-insensitively."""
        key = _key(name)
        return [record for record in self.log if _key(record.qname) == key]

    def clear_log(self) -> None:
        """Forget the logged queries (counters restart at zero)."""
        with self._lock:
            self._log.clear()

    def wait_for_queries(self, count: int, timeout: float = 5.0) -> bool:
        """Block until `count` queries are logged; False if `timeout` passes first.

        For queries whose client will not get an answer (drop) or runs elsewhere.
        """
        with self._changed:
            return self._changed.wait_for(lambda: len(self._log) >= count, timeout)

    def _record(self, record: QueryRecord) -> None:
        with self._changed:
            self._log.append(record)
            self._changed.notify_all()

    # ------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """The listening IP address, e.g. '127.0.0.1'."""
        return self._host

    @property
    def port(self) -> int:
        """The listening port (UDP and TCP); only meaningful once started."""
        if self._port == 0:
            raise RuntimeError("FakeUpstream has no port until start()")
        return self._port

    @property
    def endpoint(self) -> str:
        """'127.0.0.1:PORT' (or '[::1]:PORT'), the form filterd's config takes."""
        return format_endpoint(self._host, self.port)

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Bind the sockets and start serving; returns once both are accepting."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        udp, tcp = bind_udp_tcp(self._host, self._requested_port)
        self._port = int(tcp.getsockname()[1])
        self._startup_error = None
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._loop, udp, tcp, ready),
            name=f"FakeUpstream-{self.endpoint}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(_STOP_TIMEOUT):
            self.stop()
            raise RuntimeError("FakeUpstream did not start in time")
        if self._startup_error is not None:
            error = self._startup_error
            self.stop()
            raise RuntimeError(f"FakeUpstream failed to start: {error}") from error
        return self

    def stop(self) -> None:
        """Close every socket, end every task and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        stopping = self._stopping
        if stopping is not None:
            # The loop may already be closed if startup failed: nothing to wake then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"FakeUpstream thread {thread.name} did not stop")
        self._thread = None
        self._loop = None
        self._stopping = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        udp: socket.socket,
        tcp: socket.socket,
        ready: threading.Event,
    ) -> None:
        """Thread body: serve until stopped, then close the loop for good."""
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(udp, tcp, ready))
        except BaseException as exc:  # reported to start() or lost after stop
            self._startup_error = self._startup_error or exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                ready.set()

    async def _serve(self, udp: socket.socket, tcp: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        try:
            server = await asyncio.start_server(self._serve_connection, sock=tcp, backlog=64)
        except BaseException:
            transport.close()
            tcp.close()
            raise
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            transport.close()
            for writer in list(self._writers):
                writer.transport.abort()
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a handler task, keeping a reference so it is neither lost nor leaked."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ transport

    async def _answer_udp(
        self, transport: asyncio.DatagramTransport, data: bytes, addr: tuple[Any, ...]
    ) -> None:
        for wire in await self._respond(data, "udp", int(addr[1])):
            if transport.is_closing():
                return
            transport.sendto(wire, addr)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """start_server's callback; ends quietly when stop() cancels it.

        Python 3.11's start_server reports a *cancelled* handler as an unhandled
        error, so the cancellation that stop() uses is absorbed here.
        """
        with contextlib.suppress(asyncio.CancelledError):
            await self._connection(reader, writer)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP connection: read framed queries until EOF, answer each concurrently."""
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        source_port = int(peer[1]) if peer else 0
        write_lock = asyncio.Lock()
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(length)
                task = asyncio.create_task(self._answer_tcp(writer, write_lock, data, source_port))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed (or half-closed) the connection
        finally:
            # Answer what was asked before the client half-closed, then hang up.
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer_tcp(
        self, writer: asyncio.StreamWriter, lock: asyncio.Lock, data: bytes, source_port: int
    ) -> None:
        for wire in await self._respond(data, "tcp", source_port):
            async with lock:
                if writer.is_closing():
                    return
                writer.write(len(wire).to_bytes(2, "big") + wire)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

    # ------------------------------------------------------------- answers

    async def _respond(self, data: bytes, transport: Transport, source_port: int) -> list[bytes]:
        """Wire replies to send for one received message, in order (maybe none)."""
        try:
            query = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError):
            return []  # not DNS: a real server would drop it too
        opts = [rr for rr in query.ar if _rr_type(rr) == _TYPE_OPT]
        had_edns = bool(opts)
        do_bit = had_edns and bool(int(opts[0].ttl) & _DO_BIT)
        questions = list(query.questions)
        qname = str(questions[0].qname) if questions else ""
        qtype = _qtype_text(int(questions[0].qtype)) if questions else ""
        query_id = int(query.header.id)
        self._record(QueryRecord(transport, qname, qtype, had_edns, do_bit, source_port, query_id))
        behaviour = self._take_behaviour(_key(qname)) if questions else None
        if behaviour is not None:
            if behaviour.drop:
                return []
            if behaviour.delay > 0:
                await asyncio.sleep(behaviour.delay)
        reply = self._build_reply(query, had_edns, do_bit, behaviour)
        if transport == "udp":
            limit = _CLASSIC_UDP_LIMIT
            if had_edns:
                limit = max(_CLASSIC_UDP_LIMIT, min(int(opts[0].rclass), EDNS_PAYLOAD))
            forced = behaviour is not None and behaviour.udp_truncate
            if forced or len(reply.pack()) > limit:
                reply.rr = []
                reply.auth = []
                reply.ar = [rr for rr in reply.ar if _rr_type(rr) == _TYPE_OPT]
                reply.header.tc = 1
        correct = bytes(reply.pack())
        if behaviour is not None and behaviour.mangle is not None:
            correct = behaviour.mangle(correct)
        if behaviour is None or not (behaviour.wrong_id or behaviour.wrong_question):
            return [correct]
        replies: list[bytes] = []
        if behaviour.wrong_id:
            wrong = query_id ^ _WRONG_ID_XOR
            replies.append(wrong.to_bytes(2, "big") + correct[2:])
        if behaviour.wrong_question:
            qtype_number = int(questions[0].qtype) if questions else 1
            reply.questions = [DNSQuestion(WRONG_QUESTION_NAME, qtype_number)]
            replies.append(bytes(reply.pack()))
        if behaviour.then_correct:
            replies.append(correct)
        return replies

    def _build_reply(
        self, query: _DnsObj, had_edns: bool, do_bit: bool, behaviour: Behaviour | None
    ) -> _DnsObj:
        header = DNSHeader(
            id=query.header.id,
            qr=1,
            aa=1,
            rd=query.header.rd,
            opcode=query.header.opcode,
        )
        reply = DNSRecord(header, questions=list(query.questions))
        if had_edns:
            reply.add_ar(EDNS0(udp_len=EDNS_PAYLOAD, flags="do" if do_bit else ""))
        if behaviour is not None and (behaviour.servfail or behaviour.refused):
            header.aa = 0
            header.rcode = RCODE.SERVFAIL if behaviour.servfail else RCODE.REFUSED
            return reply
        if int(query.header.opcode) != _OPCODE_QUERY:
            header.aa = 0
            header.rcode = RCODE.NOTIMP
            return reply
        if len(reply.questions) != 1:
            header.aa = 0
            header.rcode = RCODE.FORMERR
            return reply
        question = reply.questions[0]
        rcode, answers, authority = self._lookup(question.qname, int(question.qtype))
        header.rcode = rcode
        for rr in answers:
            reply.add_answer(rr)
        for rr in authority:
            reply.add_auth(rr)
        return reply

    def _lookup(self, qname: _DnsObj, qtype: int) -> tuple[int, list[_DnsObj], list[_DnsObj]]:
        """(rcode, answer, authority) for a question, chasing CNAMEs in our data."""
        with self._lock:
            owner = qname
            answers: list[_DnsObj] = []
            for _ in range(_CNAME_HOPS):
                key = _key(str(owner))
                rrs = self._records.get(key, [])
                matched = [rr for rr in rrs if qtype in (_rr_type(rr), _TYPE_ANY)]
                if matched:
                    return RCODE.NOERROR, answers + [_renamed(rr, owner) for rr in matched], []
                cnames = [rr for rr in rrs if _rr_type(rr) == _TYPE_CNAME]
                if not cnames:
                    break
                answers.append(_renamed(cnames[0], owner))
                owner = DNSLabel(str(cnames[0].rdata.label))
            key = _key(str(owner))
            rcode = RCODE.NOERROR if self._exists(key) else RCODE.NXDOMAIN
            return int(rcode), answers, [self._soa_for(key)]

    def _exists(self, key: str) -> bool:
        """Whether the name owns records or is an empty non-terminal (RFC 8020)."""
        if key in self._records:
            return True
        suffix = "." + key
        return any(owner.endswith(suffix) for owner in self._records) if key else True

    def _soa_for(self, key: str) -> _DnsObj:
        """The closest enclosing SOA among our records, else the default one."""
        labels = key.split(".") if key else []
        for start in range(len(labels) + 1):
            for rr in self._records.get(".".join(labels[start:]), []):
                if _rr_type(rr) == _TYPE_SOA:
                    return rr
        return self._default_soa


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands each datagram to the server as its own task (delays don't serialize)."""

    def __init__(self, server: FakeUpstream) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._transport is not None:
            self._server._spawn(self._server._answer_udp(self._transport, data, addr))

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for earlier replies (client went away) are not our problem."""


__all__ = [
    "DEFAULT_NEGATIVE_TTL",
    "EDNS_PAYLOAD",
    "WRONG_QUESTION_NAME",
    "Behaviour",
    "FakeUpstream",
    "QueryRecord",
    "Transport",
]
