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
    output_mib: Annotated[float, typer.Option(help="Size of each placeholder video, MiB (with --placeholder).")] = 1.0,
    placeholder: Annotated[
        bool,
        typer.Option(
            "--placeholder",
            help="Serve a placeholder of --output-mib instead of rendering the input image into a playable MP4.",
        ),
    ] = False,
) -> None:
    """Serve the fal.ai and Runway simulator on loopback (for the demo and local development).

    Each task renders its input image into a real, playable MP4 (a slow pan and zoom, as
    the demo does), unless --placeholder asks for fixed-size filler bytes (benchmarks)."""
    import contextlib
    import tempfile
    import time

    from vidanim.simulator import Simulator
    from vidanim.simulator.demo import pan_and_zoom

    with contextlib.ExitStack() as stack:
        factory = None
        if not placeholder:
            factory = pan_and_zoom(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidanim-sim-"))))
        sim = stack.enter_context(
            Simulator(
                port=port,
                queue_seconds=queue_seconds,
                run_seconds=run_seconds,
                output_size=int(output_mib * 1024 * 1024),
                video_factory=factory,
            )
        )
        typer.echo(f"simulator on {sim.base_url}")
        typer.echo(f"  {'placeholder' if placeholder else 'rendered MP4'} videos")
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


def dev(
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep stored files here (default: a temporary directory, removed at the end).")
    ] = None,
) -> None:
    """A local stack to develop against: PostgreSQL with the migrations and two seed users, the
    simulator rendering real videos, a worker with /metrics; prints the variables to paste.
    Ctrl-C stops it all."""
    from vidanim.db.embedded import EmbeddedPostgresError
    from vidanim.simulator import dev as dev_stack

    try:
        dev_stack.run(data_dir, say=lambda line: typer.echo(line, err=False))
    except EmbeddedPostgresError as exc:
        raise fail(str(exc), 2) from None


def register(app: typer.Typer) -> None:
    """The `vidanim.plugins` entry point: add the simulator's commands to the CLI."""
    app.command("simulator")(simulator)
    app.command("demo")(demo)
    app.command("dev")(dev)
