"""What the worker knows of video files: enough of their layout to refuse what is not an MP4."""

from __future__ import annotations


def looks_like_mp4(head: bytes) -> bool:
    """An ISO base media file starts with a box whose type is `ftyp`."""
    return len(head) >= 8 and head[4:8] == b"ftyp"
