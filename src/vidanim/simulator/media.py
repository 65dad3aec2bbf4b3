"""Video bytes for the simulator: a tiny valid MP4 layout, of any size, streamed."""

from __future__ import annotations

import struct
from collections.abc import Iterator

CHUNK = 1024 * 1024
# ISO base media: an `ftyp` box naming the brands, then one `mdat` box.
FTYP = struct.pack(">I4s4sI4s4s4s", 28, b"ftyp", b"isom", 0x200, b"isom", b"iso2", b"mp41")


def mp4_chunks(size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield exactly `size` bytes shaped as an MP4 (ftyp + mdat), without holding them."""
    size = max(size, len(FTYP) + 8)
    mdat_size = size - len(FTYP)
    yield FTYP + struct.pack(">I4s", mdat_size if mdat_size < 2**32 else 1, b"mdat")
    remaining = mdat_size - 8
    block = b"\0" * chunk
    while remaining > 0:
        n = min(remaining, chunk)
        yield block[:n]
        remaining -= n
