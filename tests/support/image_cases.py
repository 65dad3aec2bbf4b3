"""The input images a user might try, each with the exact refusal it must get.

Shared by the tests of vidanim.images, the client (both transports) and the CLI,
so every path refuses the same file with the same words.
"""

from __future__ import annotations

import os

import pytest
from PIL import Image

from tests.support import images

_NOISE = images.noise_png(2000, 2000)

REFUSED = [
    pytest.param(
        "tiny.png",
        images.png(200, 200),
        "tiny.png: the image is 200×200; providers need at least 300 px on each side",
        id="too-small",
    ),
    pytest.param(
        "huge.png",
        images.encode(Image.new("L", (8100, 4100)), "PNG"),
        "huge.png: the image is 8100×4100; providers accept at most 8000 px a side",
        id="too-large-in-pixels",
    ),
    pytest.param(
        "wide.png",
        images.png(4000, 900),
        "wide.png: the image is 4000×900 (aspect 4.44); providers accept 0.5–2.0",
        id="too-wide",
    ),
    pytest.param(
        "tall.png",
        images.png(500, 1200),
        "tall.png: the image is 500×1200 (aspect 0.42); providers accept 0.5–2.0",
        id="too-tall",
    ),
    pytest.param(
        "anim.webp",
        images.animated("WEBP"),
        "anim.webp: the image is animated (3 frames); use a single still frame",
        id="animated-webp",
    ),
    pytest.param(
        "anim.png",
        images.animated("GIF"),
        "anim.png: the file is a GIF image; only PNG, JPEG and WebP are accepted",
        id="animated-gif",
    ),
    pytest.param(
        "fake.png",
        images.gif(),
        "fake.png: the file is a GIF image; only PNG, JPEG and WebP are accepted",
        id="gif-renamed-png",
    ),
    pytest.param(
        "photo.png", images.jpeg(), "photo.png: the file is named .png but holds a JPEG image", id="jpeg-renamed-png"
    ),
    pytest.param(
        "broken.png",
        images.truncated_png(),
        "broken.png: the image is truncated or corrupt (image file is truncated",
        id="truncated-png",
    ),
    pytest.param(
        "noise.png",
        b"\x89PNG\r\n\x1a\n" + os.urandom(4000),
        "noise.png: the file is not a PNG, JPEG or WebP image",
        id="png-header-then-random-bytes",
    ),
    pytest.param(
        "big.png",
        _NOISE,
        f"big.png: the image is {len(_NOISE) / 1e6:.1f} MB ({len(_NOISE):,} bytes); the limit is 10.0 MB",
        id="over-the-bucket-limit",
    ),
    pytest.param("empty.png", b"", "empty.png: the file is empty (0 bytes)", id="zero-bytes"),
    pytest.param(
        "notes.txt", b"hello", "notes.txt: the image must be a .png, .jpg, .jpeg or .webp file", id="not-an-image-name"
    ),
]
