"""What a `vidanim worker` process writes on stderr: every line in the chosen format (the libraries' too),
and the addresses its HTTP listeners bound."""

from __future__ import annotations

import json
import re
import signal

import httpx

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
