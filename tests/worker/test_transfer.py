"""Provider-output downloads: which URLs and redirect hops the worker fetches (output_hosts.py, transfer.py).

Real HTTP throughout: the simulator serves the videos and an open redirect
(GET /redirect?to=...); an "internal" server on loopback stands for what an
attacker would like stored as a victim's video. DNS answers for public names are
injected (the machine has no network), and checked exactly as real ones.
"""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from vidanim.simulator import Simulator
from vidanim.storage.local import LocalStorage
from vidanim.worker.db import open_pool
from vidanim.worker.output_hosts import OutputHosts, OutputUrlRefused, address_allowed, host_matches
from vidanim.worker.transfer import MAX_REDIRECTS, copy_video
from vidanim.worker.transfer import OutputUrlRefused as DownloadRefused

INTERNAL = b"\x00\x00\x00\x18ftypmp42" + b"INTERNAL-SECRET " * 64


class Internal:
    """A loopback service that must never be fetched (it answers an MP4-looking body)."""

    def __init__(self) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(INTERNAL)))
                self.end_headers()
                self.wfile.write(INTERNAL)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/internal"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sim():
    with Simulator() as s:
        yield s


@pytest.fixture
def internal():
    server = Internal()
    yield server
    server.close()


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=5, follow_redirects=True) as client:  # as the worker's: it follows
        yield client


@pytest.fixture
async def storage(db, tmp_path: Path):
    pool = open_pool(db.dsn, size=2)
    await pool.open(wait=True, timeout=30)
    store = LocalStorage(root=tmp_path / "storage", pool=pool)
    yield store
    await store.aclose()
    await pool.close()


def sim_host(sim) -> str:
    return urlsplit(sim.base_url).netloc


def file_url(sim) -> str:
    task = sim._new_task("fal", "fal-ai/test", {"image_url": "x"})
    return sim._output_url(task)


def public_dns(answers: dict[str, list[str]]):
    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    return resolver


FAL = ("fal.media", "*.fal.media")


async def test_a_redirect_to_loopback_is_not_followed(sim, internal, http, storage):
    hosts = OutputHosts(FAL, (sim_host(sim),))
    url = f"{sim.base_url}/redirect?to={quote(internal.url)}"
    with pytest.raises(DownloadRefused, match="not https"):
        await copy_video(http, url, storage, f"{uuid.uuid4()}/{uuid.uuid4()}.mp4", max_bytes=10**7, hosts=hosts)
    assert sim.requests["redirect"] == 1
    assert internal.hits == 0, "the internal service was never asked"


async def test_a_redirect_to_an_allowed_host_naming_a_private_address_is_refused(sim, http, storage):
    hosts = OutputHosts(FAL, (sim_host(sim),), public_dns({"v3.fal.media": ["93.184.216.34", "10.0.0.7"]}))
    url = f"{sim.base_url}/redirect?to={quote('https://v3.fal.media/files/out.mp4')}"
    with pytest.raises(DownloadRefused, match=r"non-public address \(10\.0\.0\.7\)"):
        await copy_video(http, url, storage, f"{uuid.uuid4()}/{uuid.uuid4()}.mp4", max_bytes=10**7, hosts=hosts)


async def test_a_redirect_to_an_allowed_host_is_followed(sim, http, storage):
    # the simulator under two names, both configured: the redirect changes host and is re-checked
    port = urlsplit(sim.base_url).port
    hosts = OutputHosts(FAL, (sim_host(sim), f"localhost:{port}"))
    target = file_url(sim).replace("127.0.0.1", "localhost")
    url = f"{sim.base_url}/redirect?to={quote(target)}"
    info = await copy_video(http, url, storage, f"{uuid.uuid4()}/{uuid.uuid4()}.mp4", max_bytes=10**7, hosts=hosts)
    assert info.size == sim.output_size
    assert sim.requests["redirect"] == 1


async def test_redirects_are_followed_a_bounded_number_of_times(sim, http, storage):
    hosts = OutputHosts(FAL, (sim_host(sim),))
    url = file_url(sim)
    for _ in range(MAX_REDIRECTS + 1):
        url = f"{sim.base_url}/redirect?to={quote(url)}"
    with pytest.raises(DownloadRefused, match="redirected more than"):
        await copy_video(http, url, storage, f"{uuid.uuid4()}/{uuid.uuid4()}.mp4", max_bytes=10**7, hosts=hosts)
    assert sim.requests["redirect"] == MAX_REDIRECTS + 1


async def test_the_simulators_loopback_address_is_refused_unless_configured(sim, http, storage):
    with pytest.raises(DownloadRefused, match="not https"):
        await copy_video(
            http, file_url(sim), storage, f"{uuid.uuid4()}/{uuid.uuid4()}.mp4", max_bytes=10**7, hosts=OutputHosts(FAL)
        )
    assert sim.requests["file"] == 0


async def test_http_is_refused_in_production_even_for_an_allowed_host():
    hosts = OutputHosts(FAL, (), public_dns({"v3.fal.media": ["93.184.216.34"]}))
    with pytest.raises(OutputUrlRefused, match="is http, not https"):
        await hosts.check("http://v3.fal.media/files/out.mp4")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/out.mp4",
        "https://evilfal.media/out.mp4",
        "https://fal.media.evil.example/out.mp4",
        "https://93.184.216.34/out.mp4",
        "https://v3.fal.media:8443/out.mp4",
        "ftp://v3.fal.media/out.mp4",
        "file:///etc/passwd",
    ],
)
async def test_a_host_off_the_allow_list_or_another_scheme_or_port_is_refused(url):
    hosts = OutputHosts(FAL, (), public_dns({"v3.fal.media": ["93.184.216.34"]}))
    with pytest.raises(OutputUrlRefused):
        await hosts.check(url)


async def test_an_allowed_host_is_connected_to_at_the_address_checked_under_its_own_name():
    hosts = OutputHosts(FAL, (), public_dns({"v3.fal.media": ["93.184.216.34"]}))
    hop = await hosts.check("https://v3.fal.media/files/out.mp4?sig=1")
    assert str(hop.url) == "https://93.184.216.34/files/out.mp4?sig=1"
    assert hop.headers == {"Host": "v3.fal.media"}
    assert hop.extensions == {"sni_hostname": "v3.fal.media"}, "TLS checks the certificate for the name"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 (an address checked, not bound)
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_allowed(address, allowed):
    assert address_allowed(address) is allowed


def test_a_wildcard_matches_subdomains_only():
    assert host_matches("v3.fal.media", "*.fal.media")
    assert host_matches("a.b.fal.media", "*.fal.media")
    assert not host_matches("fal.media", "*.fal.media")
    assert not host_matches("evilfal.media", "*.fal.media")
    assert host_matches("FAL.media.", "fal.media")
