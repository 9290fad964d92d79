"""An Idempotency-Key's fingerprint and a list's keys, without a server."""

from __future__ import annotations

import io

from blanket.server.idempotency import fingerprint, list_keys
from blanket.server.intake import Upload


class Keys:
    def __init__(self, *taken: str):
        self.taken = set(taken)

    def task_for_key(self, key: str) -> int | None:
        return 1 if key in self.taken else None


def test_a_request_in_other_words_has_the_same_fingerprint():
    assert fingerprint({"type": "a", "environment": {"X": 1, "Y": 2}}) == fingerprint(
        {"environment": {"Y": 2, "X": 1}, "type": "a"})
    assert fingerprint({"type": "a"}) != fingerprint({"type": "b"})
    assert fingerprint({"type": "a"}) != fingerprint([{"type": "a"}])


def test_files_count_by_name_and_size_and_are_left_where_they_were_read():
    stream = io.BytesIO(b"12345")
    stream.seek(2)
    one = fingerprint({"type": "a"}, [Upload("in.txt", stream)])
    assert stream.tell() == 2
    assert one == fingerprint({"type": "a"}, [Upload("in.txt", io.BytesIO(b"abcde"))])
    assert one != fingerprint({"type": "a"}, [Upload("in.txt", io.BytesIO(b"abcdef"))])
    assert one != fingerprint({"type": "a"}, [Upload("other.txt", io.BytesIO(b"12345"))])


def test_a_lists_first_place_takes_the_bare_key_unless_an_older_list_holds_key_0():
    assert list_keys(Keys(), "client:a:K", 3) == ["client:a:K", "client:a:K:1", "client:a:K:2"]
    assert list_keys(Keys("client:a:K:0"), "client:a:K", 2) == ["client:a:K:0", "client:a:K:1"]
