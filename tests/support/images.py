"""Real image files, made with Pillow, for the tests of input checks."""

from __future__ import annotations

import io

from PIL import Image


def encode(image: Image.Image, kind: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=kind, **params)
    return out.getvalue()


def picture(width: int = 640, height: int = 480, mode: str = "RGB") -> Image.Image:
    """A small gradient: compresses well, decodes as a real picture."""
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    return image


def png(width: int = 640, height: int = 480) -> bytes:
    return encode(picture(width, height), "PNG")


def jpeg(width: int = 640, height: int = 480, mode: str = "RGB") -> bytes:
    return encode(picture(width, height, mode), "JPEG", quality=90)


def webp(width: int = 640, height: int = 480) -> bytes:
    return encode(picture(width, height), "WEBP")


def gif(width: int = 640, height: int = 480) -> bytes:
    return encode(picture(width, height, "P"), "GIF")


def animated(kind: str, frames: int = 3, width: int = 640, height: int = 480) -> bytes:
    """An animated GIF or WebP of `frames` frames."""
    first, *rest = [picture(width, height).rotate(i * 10) for i in range(frames)]
    return encode(first, kind, save_all=True, append_images=rest, duration=100, loop=0)


def truncated_png(width: int = 640, height: int = 480) -> bytes:
    data = encode(Image.effect_noise((width, height), 64).convert("RGB"), "PNG")
    return data[: len(data) // 2]


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: its size in bytes grows with its pixels."""
    return encode(Image.effect_noise((width, height), 128).convert("RGB"), "PNG", compress_level=0)


PNG = png()
