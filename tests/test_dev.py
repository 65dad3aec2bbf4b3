"""`vidanim dev` (make dev): the local stack a developer pastes variables from, tried as one would."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.images import PNG
from vidanim.media import looks_like_mp4
from vidanim.simulator.demo import playable_seconds
from vidanim.simulator.dev import READY

EXPORT = re.compile(r"^\s+export (.+?)(?:\s+#.*)?$")


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDANIM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidanim", "dev", "--data-dir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(READY):
            return proc, lines
    proc.kill()
    raise AssertionError("vidanim dev never said it was ready:\n" + "\n".join(lines))


def _pasted(lines: list[str]) -> dict[str, str]:
    """What a developer's shell holds after pasting the export lines."""
    values: dict[str, str] = {}
    for line in lines:
        match = EXPORT.match(line)
        if match:
            for pair in shlex.split(match.group(1)):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def test_make_dev_serves_a_stack_the_printed_variables_reach_and_stops_cleanly(tmp_path):
    proc, lines = _start(tmp_path)
    try:
        pasted = _pasted(lines)
        for key in ("VIDANIM_DATABASE_URL", "VIDANIM_FAL_KEY", "VIDANIM_LOCAL_STORAGE_DIR", "ALICE_TOKEN", "BOB_ID"):
            assert key in pasted, lines
        image = tmp_path / "elsewhere" / "cat.png"
        image.parent.mkdir()
        image.write_bytes(PNG)
        shell = {**{k: v for k, v in os.environ.items() if not k.startswith("VIDANIM_")}, **pasted}
        animate = subprocess.run(
            [sys.executable, "-m", "vidanim", "animate", "cat.png", "--access-token", pasted["ALICE_TOKEN"], "--wait"],
            env=shell,
            cwd=image.parent,  # another directory than vidanim dev's: paths must not depend on it
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert animate.returncode == 0, animate.stderr
        url = animate.stdout.strip().splitlines()[-1].removeprefix("video: ")
        video = httpx.get(url, timeout=30)
        assert video.status_code == 200
        assert looks_like_mp4(video.content[:64])
        saved = tmp_path / "video.mp4"
        saved.write_bytes(video.content)
        assert playable_seconds(saved) > 1, "a real, decodable video, not a placeholder"
        operator = next(line.split()[-1] for line in lines if "/metrics" in line)
        assert "vidanim_" in httpx.get(operator, timeout=10).text
        listed = subprocess.run(
            [sys.executable, "-m", "vidanim", "jobs", "list"], env=shell, capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert "completed" in listed.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.rstrip().endswith("stopped")
    stored = list((tmp_path / "dev" / "storage" / "video-outputs").rglob("*.mp4"))
    assert len(stored) == 1, "the video stays in the data directory"


def test_the_standalone_simulator_serves_a_playable_video_of_the_input_image(tmp_path):
    import http.server
    import threading

    image = PNG

    class Image(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Image)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidanim", "simulator", "--port", "0", "--queue-seconds", "0.1", "--run-seconds", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert second.strip() == "rendered MP4 videos", second
        base = first.split()[2]
        headers = {"Authorization": "Key sim-fal-key"}
        model = "fal-ai/kling-video/v2.1/standard/image-to-video"
        url = f"http://127.0.0.1:{server.server_address[1]}/cat.png"
        task = httpx.post(f"{base}/{model}", json={"image_url": url}, headers=headers).json()
        deadline = time.monotonic() + 60
        while httpx.get(task["status_url"], headers=headers).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        result = httpx.get(task["response_url"], headers=headers).json()
        video = httpx.get(result["video"]["url"], timeout=60).content
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        server.shutdown()
        server.server_close()
    saved = tmp_path / "sim.mp4"
    saved.write_bytes(video)
    assert looks_like_mp4(video[:64])
    assert playable_seconds(saved) > 1
