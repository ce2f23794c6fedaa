"""The byte-level question decoder agrees with the codecs, and never fails unexpectedly.

Valid queries are built with dnslib (names with odd and binary labels, any
type and class, with and without EDNS, DO and CD, EDNS options) and read
back with dnspython, an independent decoder; the fast decoder must find the
same name, type, class and EDNS facts. Arbitrary bytes and mutated queries
must only ever give a ``Query``, ``None`` or a ``QueryError`` (never
IndexError, never anything else), and when it gives a ``Query``, dnspython
must read the same question from the same bytes.
"""

from __future__ import annotations

import dns.message
import dns.name
import dnslib
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from filterd.errors import QueryError
from filterd.wire.query import Query, parse_query, validate

label = st.binary(min_size=1, max_size=63).filter(lambda b: b"." not in b)
ascii_label = st.from_regex(rb"[A-Za-z0-9_-]{1,63}", fullmatch=True)
names = st.lists(st.one_of(label, ascii_label), min_size=0, max_size=6).filter(
    lambda labels: sum(len(x) + 1 for x in labels) + 1 <= 255
)
options = st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=20)), max_size=3)


def build(
    labels: list[bytes],
    qtype: int,
    qclass: int,
    edns: bool,
    do: bool,
    cd: bool,
    udp: int,
    opts: list[tuple[int, bytes]],
) -> bytes:
    record = dnslib.DNSRecord(
        dnslib.DNSHeader(id=0x1234, rd=1),
        q=dnslib.DNSQuestion(dnslib.DNSLabel(labels), qtype, qclass),
    )
    record.header.cd = int(cd)
    if edns:
        record.add_ar(
            dnslib.EDNS0(
                udp_len=udp,
                flags="do" if do else "",
                opts=[dnslib.EDNSOption(c, d) for c, d in opts],
            )
        )
    return bytes(record.pack())


@settings(max_examples=500, deadline=None)
@given(
    labels=names,
    qtype=st.integers(0, 65535),
    qclass=st.integers(0, 65535),
    edns=st.booleans(),
    do=st.booleans(),
    cd=st.booleans(),
    udp=st.integers(0, 65535),
    opts=options,
)
def test_valid_queries_decode_like_dnslib(
    labels: list[bytes],
    qtype: int,
    qclass: int,
    edns: bool,
    do: bool,
    cd: bool,
    udp: int,
    opts: list[tuple[int, bytes]],
) -> None:
    data = build(labels, qtype, qclass, edns, do, cd, udp, opts)
    query = parse_query(data)
    assert isinstance(query, Query)
    optimistic_key = query.key
    validate(query)
    if not any(0 in label for label in labels):
        # The first-zero-octet guess is right unless a label holds a zero octet;
        # when it is wrong, validate() re-keys (checked by the asserts below).
        assert query.key == optimistic_key
    reference = dns.message.from_wire(data, question_only=True)
    question = reference.question[0]
    assert query.qtype == question.rdtype == qtype
    assert query.qclass == question.rdclass == qclass
    assert question.name == dns.name.Name([*labels, b""])
    assert data[12 : query.name_end] == b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    assert query.has_edns == edns
    assert query.do == (edns and do)
    assert query.udp_size == (max(udp, 512) if edns else 512)
    assert query.key[:-1] == data[12 : query.qend].lower()
    # Served as stored exactly when the client wrote no upper-case letter.
    assert query.asked_lower == (data[12 : query.qend] == data[12 : query.qend].lower())


def _decodes(data: bytes) -> Query | None:
    """The query as the pipeline would forward it: decoded and validated."""
    try:
        query = parse_query(data)
        if query is not None:
            validate(query)
    except QueryError:
        return None
    return query


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    query = _decodes(data)
    if query is not None:
        parsed = dns.message.from_wire(data, question_only=True)
        assert parsed.question[0].rdtype == query.qtype


@settings(max_examples=1000, deadline=None)
@given(
    labels=names,
    edns=st.booleans(),
    position=st.integers(0, 400),
    value=st.integers(0, 255),
    cut=st.integers(0, 400),
)
def test_mutated_queries_never_crash(
    labels: list[bytes], edns: bool, position: int, value: int, cut: int
) -> None:
    data = bytearray(build(labels, 1, 1, edns, False, False, 1232, []))
    assume(position < len(data))
    data[position] = value
    mutated = bytes(data[: max(cut, 12)]) if cut < len(data) else bytes(data)
    query = _decodes(mutated)
    if query is not None:
        # Whatever the decoder accepts is a question dnspython reads the same way.
        parsed = dns.message.from_wire(mutated, question_only=True)
        assert parsed.question[0].rdtype == query.qtype
        assert parsed.question[0].rdclass == query.qclass


def test_compression_pointer_in_question_is_formerr() -> None:
    for data in (
        bytes.fromhex("123401000001000000000000c00c00010001"),
        bytes.fromhex("12340100000100000000000003777777c00c00010001"),
    ):
        try:
            query = parse_query(data)
            assert query is not None
            validate(query)
        except QueryError as exc:
            assert exc.rcode == 1
        else:
            raise AssertionError("pointer accepted")
