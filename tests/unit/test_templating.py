"""Command and file templates: quoting, the raw opt-out, undefined names, ignore files, binaries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blanket.config.templating import (
    _COMMAND_ENV,
    _TEXT_ENV,
    TemplateProblem,
    is_binary,
    load_templateignore,
    render_command,
    render_text,
)

HOSTILE = ["$(touch pwned)", "`touch pwned`", "; touch pwned", "a'b\"c", "line1\nline2", "", "*"]


def run_sh(command: str, cwd: Path) -> str:
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True,
                          text=True, check=True).stdout


def test_plain_value_is_substituted():
    assert render_command("echo {{ NAME }}", {"NAME": "world"}) == "echo world"


def test_value_with_spaces_is_quoted():
    assert render_command("echo {{ NAME }}", {"NAME": "a b"}) == "echo 'a b'"


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_metacharacters_reach_the_command_as_literal_text(value, tmp_path):
    command = render_command("printf '%s' {{ VALUE }}", {"VALUE": value})
    assert run_sh(command, tmp_path) == value
    assert not (tmp_path / "pwned").exists()


def test_raw_filter_opts_out_of_quoting(tmp_path):
    command = render_command("echo {{ WORDS | raw }}", {"WORDS": "$((1 + 2))"})
    assert command == "echo $((1 + 2))"
    assert run_sh(command, tmp_path) == "3\n"


def test_filtered_value_is_still_quoted():
    assert render_command("echo {{ NAME | upper }}", {"NAME": "a;b"}) == "echo 'A;B'"


def test_literal_template_text_is_not_quoted():
    assert render_command("ls -l | wc -l > out.txt", {}) == "ls -l | wc -l > out.txt"


def test_undefined_name_in_command_says_what_to_do():
    with pytest.raises(TemplateProblem) as caught:
        render_command("ocr {{ INPUT }}", {})
    assert str(caught.value) == (
        "command: 'INPUT' is not defined; submit it in environment or give a default"
    )


def test_undefined_name_behind_raw_is_still_an_error():
    with pytest.raises(TemplateProblem, match="'INPUT' is not defined"):
        render_command("ocr {{ INPUT | raw }}", {})


def test_syntax_error_names_the_line():
    with pytest.raises(TemplateProblem, match=r"^command: line 2: "):
        render_command("echo ok\necho {{ X ", {"X": "1"})


def test_text_is_rendered_without_quoting():
    assert render_text("name = {{ NAME }}\n", {"NAME": "a b; c"}) == "name = a b; c\n"


def test_text_keeps_its_trailing_newline():
    assert render_text("x\n\n", {}) == "x\n\n"


def test_undefined_name_in_text_names_the_file():
    with pytest.raises(TemplateProblem, match=r"^conf/app\.ini: 'PORT' is not defined"):
        render_text("port={{ PORT }}", {}, where="conf/app.ini")


def test_templateignore_missing_gives_none(tmp_path):
    assert load_templateignore(tmp_path) is None


def test_templateignore_matches_gitignore_patterns(tmp_path):
    (tmp_path / ".templateignore").write_text("# assets\n*.j2\nvendor/\n")
    spec = load_templateignore(tmp_path)
    assert spec is not None
    assert spec.match_file("deep/page.j2")
    assert spec.match_file("vendor/lib.sh")
    assert not spec.match_file("run.sh")


def test_utf8_text_is_not_binary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("héllo ✓\n" * 5000, encoding="utf-8")
    assert not is_binary(path)


def test_nul_byte_makes_a_file_binary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc\0def")
    assert is_binary(path)


def test_invalid_utf8_after_the_first_chunk_makes_a_file_binary(tmp_path):
    path = tmp_path / "a.dat"
    path.write_bytes(b"a" * 20000 + b"\xff\xfe")
    assert is_binary(path)


def test_empty_file_is_text(tmp_path):
    path = tmp_path / "empty"
    path.touch()
    assert not is_binary(path)


@given(st.text().filter(lambda t: "{" not in t and "\r" not in t))
def test_text_without_tags_comes_back_as_jinja_would_give_it(text):
    # Plain text skips Jinja2 (every task's command is rendered): the answer must not change.
    for env, render in ((_COMMAND_ENV, render_command), (_TEXT_ENV, render_text)):
        assert render(text, {}) == env.from_string(text).render() == text


def test_line_endings_are_still_normalised_by_jinja():
    assert render_text("a\r\nb", {}) == "a\nb"
