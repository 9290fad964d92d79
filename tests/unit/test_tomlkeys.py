"""Finding a TOML key of too many dotted parts without parsing: dots between a key's parts
count wherever a key stands, and nowhere else."""

from __future__ import annotations

import pytest

from blanket.config.checker import MAX_KEY_PARTS, parse_toml
from blanket.config.problems import ConfigInvalid
from blanket.config.tomlkeys import overlong_key_line

LIMIT = 5


@pytest.mark.parametrize(("text", "line"), [
    ("a.b.c.d.e.f = 1\n", 1),  # a bare dotted key
    ("x = 1\n[a.b.c.d.e.f]\n", 2),  # a table header
    ("[[a.b.c.d.e.f]]\n", 1),  # an array of tables
    ("10.10.10.10.10.10 = 1\n", 1),  # number parts are parts
    ('"a"."b".c.\'d\'.e.f = 1\n', 1),  # quoted parts
    ("t = {x = 1, a.b.c.d.e.f = 2}\n", 1),  # a key in an inline table
    ('s = """\n....\n"""\na.b.c.d.e.f = 1\n', 4),  # line numbers count a string's lines
    ("a . b . c . d . e . f = 1\n", 1),  # spaces around the dots
])
def test_a_key_of_too_many_parts_is_found_with_its_line(text, line):
    assert overlong_key_line(text, LIMIT) == line


@pytest.mark.parametrize("text", [
    "a.b.c.d.e = 1\n",  # exactly the limit
    'x = "a.b.c.d.e.f.g"\n',  # in a basic string
    'x = "q\\".\\"....."\n',  # with escaped quotes
    "x = 'a.b.c.d.e.f.g'\n",  # in a literal string
    'x = """\na.b.c.d.e.f.g\n"""\n',  # on a line of a multi-line string
    "x = '''\na.b.c.d.e.f.g = 1\n'''\n",
    "x = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]\n",  # decimal numbers
    "x = [\n  1.5, 2.5,\n  3.5, 4.5, 5.5, 6.5,\n]\n",  # an array over several lines
    "x = 1979-05-27T07:32:00.999Z\ny = {a = 1.5, b = 2.5, c = 3.5, d = 4.5, e = 5.5, f = 6.5}\n",
    "# a.b.c.d.e.f.g\nx = 1 # ......\n",  # comments
])
def test_dots_anywhere_but_between_a_keys_parts_do_not_count(text):
    assert overlong_key_line(text, LIMIT) is None


def test_keys_of_number_parts_are_refused_before_tomllib_spends_minutes_on_them():
    text = 'type = "x"\n[environment]\n' + ".".join(["10"] * 50_000) + " = 1\n"
    # (tomllib alone took 72 s over it, then the nesting check refused it)
    with pytest.raises(ConfigInvalid, match=f"more than {MAX_KEY_PARTS} dotted parts"):
        parse_toml(text, "k.toml")


def test_long_lines_of_dotted_text_in_a_multi_line_string_are_accepted():
    hosts = " ".join(f"h{i}.example.com" for i in range(1000))
    assert parse_toml(f'x = """\n{hosts}\n"""\n', "x.toml")["x"] == hosts + "\n"


@pytest.mark.parametrize("text", [
    'x = """a"""" # "[\n' + ".".join(["a"] * 6) + " = 1\n",  # a quote more before the end
    'x = """a""""" # "[\n' + ".".join(["a"] * 6) + " = 1\n",  # two more
    "x = ['''a'''', 'b']\n" + ".".join(["a"] * 6) + " = 1\n",
    "x = '''a''''' # '[\n" + ".".join(["a"] * 6) + " = 1\n",
])
def test_quotes_just_before_a_multi_line_strings_end_are_the_strings(text):
    assert overlong_key_line(text, LIMIT) == 2


def test_a_multi_line_string_ending_in_a_quote_leaves_what_follows_a_value():
    text = 'x = ["""a"""", "]",\n' + ", ".join(["1.5"] * 1200) + "\n]\n"
    assert parse_toml(text, "x.toml")["x"][:2] == ['a"', "]"]
