"""A day of queue depth and completions per minute, drawn server-side as one small SVG."""

from __future__ import annotations

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 720, 140, 4


def day_chart(depth: list[int], completions: list[int]) -> Markup:
    """Completions as bars, queue depth as a line over them, the last minute at the right."""
    n = max(len(depth), len(completions), 1)
    top = max([*depth, *completions, 1])
    x = (WIDTH - 2 * PAD) / n
    y = (HEIGHT - 2 * PAD) / top

    def py(value: int) -> float:
        return round(HEIGHT - PAD - value * y, 1)

    bars = "".join(
        f'<rect x="{round(PAD + i * x, 1)}" y="{py(c)}" width="{max(round(x, 2), 0.5)}" height="{round(c * y, 1)}"/>'
        for i, c in enumerate(completions)
        if c
    )
    line = " ".join(f"{round(PAD + (i + 0.5) * x, 1)},{py(d)}" for i, d in enumerate(depth))
    # only numbers computed here go into the markup: nothing a user wrote
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="queue depth (line) and completions per minute (bars), last 24 hours">'
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>'
        f'<g class="completions">{bars}</g>'
        f'<polyline class="depth" points="{line}"/>'
        "</svg>"
    )
