"""vidanim.logs: the one format every line takes, the libraries' included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from vidanim.logs import configure, kv_value


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Leave the root and vidanim loggers as they were found (configure changes both)."""
    root, ours = logging.getLogger(), logging.getLogger("vidanim")
    saved = (root.handlers[:], root.level, ours.handlers[:], ours.level, ours.propagate)
    yield
    root.handlers[:], ours.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    ours.setLevel(saved[3])
    ours.propagate = saved[4]
    logging.captureWarnings(False)


def test_the_libraries_log_from_warning_up_while_vidanim_logs_at_the_chosen_level(logging_state, capsys):
    configure("json", "INFO")
    # a logger nothing else configures (psycopg sets its own to WARNING when it is imported)
    library = logging.getLogger("a_library.pool")
    assert library.getEffectiveLevel() == logging.WARNING, "the root's level decides"
    library.info("a library's chatter")
    library.warning("a library's warning")
    logging.getLogger("vidanim.worker").info("ours at info")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["a library's warning", "ours at info"]
    assert lines[0]["logger"] == "a_library.pool"
    assert "logger" not in lines[1], "vidanim's own lines need no logger field"


def test_configuring_twice_leaves_one_handler_so_each_line_is_written_once(logging_state, capsys):
    configure("kv", "INFO")
    configure("kv", "INFO")
    logging.getLogger("vidanim.worker").info("once")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "event=once" in lines[0]


def test_a_librarys_message_is_redacted_like_our_own_fields(logging_state, capsys):
    configure("kv", "INFO")
    logging.getLogger("httpx").warning("GET https://x.example/v1/object/sign/a.png?token=s3cr3t failed")
    err = capsys.readouterr().err
    assert "s3cr3t" not in err
    assert "token=***" in err


@pytest.mark.parametrize("text", ['say "hi"', 'a"b', "a=b", "two words", "tab\there", "", "line\nbreak"])
def test_a_value_that_would_not_read_back_as_one_token_is_json_quoted(text):
    assert kv_value(text) == json.dumps(text)


def test_a_plain_value_stands_as_it_is():
    assert kv_value("job.completed") == "job.completed"
