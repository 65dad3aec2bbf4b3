"""`vidanim demo` (what `make demo` runs): a completed job and a playable video."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vidanim.cli import app
from vidanim.simulator.demo import playable_seconds


@pytest.mark.slow
def test_the_demo_ends_with_a_completed_job_and_a_playable_video(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["demo", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (video,) = (tmp_path / "out").glob("*.mp4")
    assert playable_seconds(video) == pytest.approx(3.0, abs=0.1)
    assert video.read_bytes()[4:8] == b"ftyp"
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert step in result.output
    assert "completed" in result.output
    assert "in the provider's queue" in result.output, "the user watched the job's place in fal's queue"
    assert "the result came by fal's signed webhook (1 verified delivery)" in result.output
    assert "signed URL" in result.output
    assert str(video) in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "out"], "the demo leaves nothing but the video"
