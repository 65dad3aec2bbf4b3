"""The simulator's commands, added to the `vidanim` CLI through the `vidanim.plugins` entry point.

`vidanim simulator` serves the fal.ai and Runway simulator on loopback; `vidanim
demo` (what `make demo` runs) takes one image to a stored, playable video against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidanim.commands.common import fail


def simulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
    queue_seconds: Annotated[float, typer.Option(help="How long a task stays queued.")] = 1.0,
    run_seconds: Annotated[float, typer.Option(help="How long a task runs.")] = 3.0,
    output_mib: Annotated[float, typer.Option(help="Size of each output video, MiB.")] = 1.0,
) -> None:
    """Serve the fal.ai and Runway simulator on loopback (for the demo and local development)."""
    import time

    from vidanim.simulator import Simulator

    sim = Simulator(
        port=port, queue_seconds=queue_seconds, run_seconds=run_seconds, output_size=int(output_mib * 1024 * 1024)
    )
    with sim:
        typer.echo(f"simulator on {sim.base_url}")
        typer.echo(f"  VIDANIM_FAL_QUEUE_URL={sim.base_url} VIDANIM_FAL_KEY={sim.fal_key}")
        typer.echo(f"  VIDANIM_RUNWAY_BASE_URL={sim.base_url} VIDANIM_RUNWAY_API_SECRET={sim.runway_secret}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def demo(
    output_dir: Annotated[Path, typer.Option(help="Where the finished video is left.")] = Path("demo-output"),
) -> None:
    """Run the whole flow on this machine: image -> job -> provider simulator -> stored video."""
    from vidanim.db.embedded import EmbeddedPostgresError
    from vidanim.simulator import demo as demo_flow

    try:
        demo_flow.run(output_dir, say=typer.echo)
    except EmbeddedPostgresError as exc:
        raise fail(str(exc), 2) from None


def register(app: typer.Typer) -> None:
    """The `vidanim.plugins` entry point: add the simulator's commands to the CLI."""
    app.command("simulator")(simulator)
    app.command("demo")(demo)
