"""Input images, checked before anyone pays: decoded with Pillow, held to the limits
of the input bucket and of the configured providers.

The Storage server checks only the declared content type and, with a
Content-Length, the size; it never looks inside a file. A provider looks, later,
after the job was queued and the quota charged. So the client decodes the image
before it uploads anything: a file that is not really a PNG, JPEG or WebP, an
animated or truncated one, one over the bucket's size limit, or one whose pixels
no configured provider accepts is refused with `InvalidInput`, naming the rule and
the value found. docs/providers.md gives each limit and its source.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

from PIL import Image, UnidentifiedImageError

from vidanim.errors import InvalidInput

# Pillow's format name -> (content type, the file extensions that name it)
FORMATS: dict[str, tuple[str, frozenset[str]]] = {
    "PNG": ("image/png", frozenset({".png"})),
    "JPEG": ("image/jpeg", frozenset({".jpg", ".jpeg"})),
    "WEBP": ("image/webp", frozenset({".webp"})),
}
EXTENSIONS = frozenset(ext for _, exts in FORMATS.values() for ext in exts)
JPEG_QUALITY = 95
# Typographic signs for messages people read: the multiplication sign and the en dash.
TIMES, DASH = "\u00d7", "\u2013"


@dataclass(frozen=True)
class ImageRules:
    """What a provider accepts as an input image (sides in pixels, aspect = width / height)."""

    min_side: int
    max_side: int
    min_aspect: float
    max_aspect: float
    max_bytes: int

    def narrowed(self, other: ImageRules) -> ImageRules:
        """What both accept."""
        return ImageRules(
            max(self.min_side, other.min_side),
            min(self.max_side, other.max_side),
            max(self.min_aspect, other.min_aspect),
            min(self.max_aspect, other.max_aspect),
            min(self.max_bytes, other.max_bytes),
        )

    def accepts(self, width: int, height: int, size: int | None = None) -> bool:
        aspect = width / height if height else 0.0
        return (
            self.min_side <= min(width, height)
            and max(width, height) <= self.max_side
            and self.min_aspect <= aspect <= self.max_aspect
            and (size is None or size <= self.max_bytes)
        )


# The documented input limits per provider; docs/providers.md gives the sources and
# says which bound is unconfirmed (and then chosen on the safe side).
PROVIDER_RULES: dict[str, ImageRules] = {
    # fal.ai, Kling image-to-video: 10.0 MB, at least 300x300, aspect 0.40-2.50;
    # no documented largest side: 8000 px chosen.
    "fal": ImageRules(min_side=300, max_side=8000, min_aspect=0.4, max_aspect=2.5, max_bytes=10_000_000),
    # Runway gen4_turbo: 16 MB by URL; aspect 0.5-2.0 and the sides unconfirmed:
    # Kling's 300 px and 8000 px chosen.
    "runway": ImageRules(min_side=300, max_side=8000, min_aspect=0.5, max_aspect=2.0, max_bytes=16_000_000),
}


def rules_for(providers: Iterable[str]) -> ImageRules:
    """What every one of these providers accepts: a job may end up on any of them."""
    chosen = [PROVIDER_RULES[p] for p in providers]
    if not chosen:
        raise ValueError("no provider named")
    rules = chosen[0]
    for other in chosen[1:]:
        rules = rules.narrowed(other)
    return rules


DEFAULT_RULES = rules_for(PROVIDER_RULES)


@dataclass(frozen=True)
class CheckedImage:
    """An image that passed every check, ready to upload as is."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    #: True when the image was re-encoded (a CMYK JPEG becomes RGB)
    converted: bool = False


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def check_image(
    data: bytes,
    name: str,
    *,
    rules: ImageRules = DEFAULT_RULES,
    size_limit: int | None = None,
    allowed_types: Iterable[str] | None = None,
) -> CheckedImage:
    """Decode `data` (named `name`) and check it; InvalidInput names the rule broken.

    `size_limit` is the input bucket's `file_size_limit`; `allowed_types` its
    `allowed_mime_types`. A CMYK JPEG is converted to RGB (providers expect RGB).
    """
    extension = PurePath(name).suffix.lower()
    if extension not in EXTENSIONS:
        raise InvalidInput(f"{name}: the image must be a .png, .jpg, .jpeg or .webp file")
    if not data:
        raise InvalidInput(f"{name}: the file is empty (0 bytes)")
    limit = min(rules.max_bytes, size_limit) if size_limit is not None else rules.max_bytes
    if len(data) > limit:
        raise InvalidInput(f"{name}: the image is {_mb(len(data))} ({len(data):,} bytes); the limit is {_mb(limit)}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidInput(f"{name}: the file is not a PNG, JPEG or WebP image") from None
        with image:
            return _check_open(image, data, name, extension, rules, allowed_types)


def _check_open(
    image: Image.Image,
    data: bytes,
    name: str,
    extension: str,
    rules: ImageRules,
    allowed_types: Iterable[str] | None,
) -> CheckedImage:
    kind = image.format or "unknown"
    if kind not in FORMATS:
        raise InvalidInput(f"{name}: the file is a {kind} image; only PNG, JPEG and WebP are accepted")
    content_type, extensions = FORMATS[kind]
    if extension not in extensions:
        raise InvalidInput(f"{name}: the file is named {extension} but holds a {kind} image")
    if allowed_types is not None and content_type not in set(allowed_types):
        raise InvalidInput(f"{name}: {content_type} is not accepted by the input bucket")
    frames = getattr(image, "n_frames", 1)
    if getattr(image, "is_animated", False) or frames > 1:
        raise InvalidInput(f"{name}: the image is animated ({frames} frames); use a single still frame")
    width, height = image.size
    if min(width, height) < rules.min_side:
        raise InvalidInput(
            f"{name}: the image is {width}{TIMES}{height}; providers need at least {rules.min_side} px on each side"
        )
    if max(width, height) > rules.max_side:
        raise InvalidInput(
            f"{name}: the image is {width}{TIMES}{height}; providers accept at most {rules.max_side} px a side"
        )
    aspect = width / height
    if not rules.min_aspect <= aspect <= rules.max_aspect:
        raise InvalidInput(
            f"{name}: the image is {width}{TIMES}{height} (aspect {aspect:.2f}); "
            f"providers accept {rules.min_aspect:.1f}{DASH}{rules.max_aspect:.1f}"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{name}: the image is truncated or corrupt ({exc})") from None
    if kind == "JPEG" and image.mode == "CMYK":
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
        return CheckedImage(out.getvalue(), content_type, extension, width, height, converted=True)
    return CheckedImage(data, content_type, extension, width, height)


def probe_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of an image (its header), or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(head)) as image:
                return image.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None
