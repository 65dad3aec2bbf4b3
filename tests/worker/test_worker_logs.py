"""What a `vidanim worker` process writes on stderr: every line in the chosen format (the libraries' too),
and the addresses its HTTP listeners bound."""

from __future__ import annotations

import json
import re
import signal
import time

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.grant_modes import service_role_scenario
from tests.support.tcp_proxy import TcpProxy
from tests.worker.test_startup import wait_for, worker_process

__all__ = ["worker_process"]

KV_PAIR = r'[A-Za-z_][\w.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"=]+)'
KV_LINE = re.compile(rf"{KV_PAIR}(?: {KV_PAIR})*")


def parse_kv(line: str) -> dict[str, str]:
    assert KV_LINE.fullmatch(line), f"not key=value: {line!r}"
    fields = {}
    for pair in re.findall(KV_PAIR, line):
        key, _, value = pair.partition("=")
        fields[key] = json.loads(value) if value.startswith('"') else value
    return fields


def parse(fmt: str, text: str) -> list[dict[str, str]]:
    lines = text.splitlines()
    assert lines, "the worker wrote nothing"
    parsed = [json.loads(line) if fmt == "json" else parse_kv(line) for line in lines]
    for fields in parsed:
        assert {"ts", "level", "event"} <= set(fields), fields
    return parsed


@service_role_scenario
@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_every_line_follows_the_chosen_format_the_pools_own_messages_included(db, worker_process, fmt):
    target = conninfo_to_dict(db.dsn)
    with TcpProxy(str(target["host"]), int(target["port"])) as proxy:
        dsn = make_conninfo(db.dsn, host="127.0.0.1", port=proxy.port)
        proc, log = worker_process(VIDANIM_DATABASE_URL=dsn, VIDANIM_LOG_FORMAT=fmt)
        wait_for("the worker starts", lambda: "worker.started" in log.read_text(), 30, proc, log)
        proxy.cut()  # the database goes away: the pool reconnects, fails, and says so
        wait_for("the pool reports its failure", lambda: "error connecting in" in log.read_text(), 30, proc, log)
        proxy.restore()
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    lines = parse(fmt, log.read_text())
    pool = [f for f in lines if f.get("logger") == "psycopg.pool"]
    assert pool, "the pool's message went through the same formatter"
    assert {f["event"] for f in lines} >= {"worker.started", "worker.stopped"}


def test_the_worker_logs_the_addresses_its_listeners_bound(db, worker_process):
    proc, log = worker_process(VIDANIM_HTTP_PORT="0", VIDANIM_OPERATOR_PORT="0")
    wait_for("the worker starts", lambda: "worker.started" in log.read_text(), 30, proc, log)
    listening = {f["listener"]: f["address"] for f in parse("kv", log.read_text()) if f["event"] == "http.listening"}
    assert set(listening) == {"public", "operator"}
    for address in listening.values():
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0, "port 0 resolved to the one bound"
    assert httpx.get(f"http://{listening['operator']}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"http://{listening['public']}/healthz", timeout=5).status_code == 404, "the public listener"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
