"""`blanket logs -f` reads the server's event stream as SSE says, however it is cut."""

from __future__ import annotations

from blanket.cli import server_sent_events

STREAM = (b": following\n\ndata: one\n\ndata: 10%\ndata: event: end\n\n"
          b"data: caf\xc3\xa9 \xe2\x80\xa8 x\n\nevent: end\ndata: SUCCESS\n\n")
EVENTS = [("message", "one"), ("message", "10%\nevent: end"), ("message", "café \u2028 x"),
          ("end", "SUCCESS")]


def test_events_come_whole_wherever_the_chunks_are_cut():
    assert list(server_sent_events([STREAM])) == EVENTS
    for size in (1, 2, 3, 7):
        chunks = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
        assert list(server_sent_events(chunks)) == EVENTS, size


def test_a_stream_cut_before_its_blank_line_gives_no_half_event():
    assert list(server_sent_events([b"data: one\n\nevent: end\ndata: SUC"])) == [
        ("message", "one")]


def test_a_log_line_goes_through_the_stream_as_it_was_written():
    from blanket.server.api.tasks import _event_data
    lines = [b"plain", b"crlf\r", b"10%\r20%\r30%", b"\revent: end\rdata: x", b"", b"\r"]
    chunks = [_event_data(line) for line in lines]
    assert [data for _event, data in server_sent_events(chunks)] == [
        "plain", "crlf", "10%\n20%\n30%", "\nevent: end\ndata: x", "", ""]  # empty lines too
