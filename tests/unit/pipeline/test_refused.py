"""A client outside the access list: REFUSED with the question echoed, and only
a well-formed question is ever echoed (inputs found by ``bench/fuzz``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from filterd.config.load import parse_config
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.pipeline.pipeline import Pipeline, build_pipeline
from filterd.pipeline.policy import Policy
from filterd.pipeline.tally import Counters
from filterd.upstream.exchange import Reactor

ALLOWED = b"\x7f\x00\x00\x01"
REFUSED = b"\xc6\x33\x64\x07"  # 198.51.100.7


class _NoUpstream:
    def reply(self, client: object, received: float) -> object:
        raise AssertionError("nothing here goes upstream")


@contextlib.contextmanager
def one_name_pipeline(
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
    allow: str = '"127.0.0.0/8"',
    reactor: Reactor | None = None,
) -> Iterator[Pipeline]:
    """A real pipeline on ``loop`` whose list blocks one name,
    ``blocked.example``, for the clients in ``allow`` (YAML list items); its
    upstream is never asked here."""
    (tmp_path / "local.txt").write_text("blocked.example\n")
    config = parse_config(
        f"access: {{allow: [{allow}]}}\nupstream: {{servers: ['127.0.0.1:9']}}\n"
        "lists: [{name: local, path: local.txt, format: domains}]\nstate_dir: state\n",
        base=tmp_path,
    )
    matcher, sources = open_matcher(compile_lists(config).index_path)
    try:
        policy = Policy(matcher, sources, config.blocking, 1232, {})
        yield build_pipeline(config, policy, loop, Counters(), reactor=reactor)
    finally:
        matcher.index.close()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    loop = asyncio.new_event_loop()
    try:
        with one_name_pipeline(tmp_path, loop) as built:
            yield built
    finally:
        loop.close()


def handle(pipeline: Pipeline, data: bytes, address: bytes) -> bytes | None:
    return pipeline.handle(data, address, True, _NoUpstream(), None, 0.0)  # type: ignore[arg-type]


def test_refused_answer_echoes_the_question(pipeline: Pipeline) -> None:
    query = dns.message.make_query("blocked.example", "A")
    answer = handle(pipeline, query.to_wire(), REFUSED)
    assert answer is not None
    message = dns.message.from_wire(answer)
    assert message.id == query.id and message.rcode() == dns.rcode.REFUSED
    assert message.question == query.question


@pytest.mark.parametrize(
    "wire",
    [
        # A label length one short: the next length octet is 0x74, a reserved label type.
        "5e2d0100000100000000000106b04d6e6f646174610372707a076578616d706c6500ffff0000"
        "0000290000000080000017000a0008d390953caf663ec10008000700011800c00002",
        # A compression pointer (0xc010) inside the question name.
        "ed3901000001000000000001046f6b61790866616d626c792e67c01078616d706c2d00000502"
        "0100002900d00000a0000000",
        # A label of 62 octets that runs past the end of the name.
        "4278010000010000000000013e2d64617368076578616d706c65000029000100002904d0000080000000",
    ],
)
def test_malformed_question_is_never_echoed(pipeline: Pipeline, wire: str) -> None:
    data = bytes.fromhex(wire.replace(" ", ""))
    # An allowed client gets FORMERR without a question; a refused one, nothing
    # (before the fix, REFUSED echoing the malformed name: dnspython could not parse it).
    answer = handle(pipeline, data, ALLOWED)
    assert answer is not None and dns.message.from_wire(answer).rcode() == dns.rcode.FORMERR
    assert handle(pipeline, data, REFUSED) is None
