"""Frames stay on their node: with two Ray nodes, each with a camera host and an inference actor,
every frame is analysed by the inference actor of the node its camera runs on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import site_yaml

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def test_each_inference_actor_sees_only_the_frames_of_its_own_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    config = tmp_path / "flux.yaml"
    text = site_yaml(var_dir=str(tmp_path / "var"))
    config.write_text(text.replace("detect_fps: 5", "detect_fps: 2\n        loop: true"))  # live, looping
    result = subprocess.run([sys.executable, "-m", "tests.cluster_locality", str(config)],
                            capture_output=True, text=True, timeout=240, cwd=HERE.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["nodes"]) == 2 and sorted(report["hosts"].values()) == report["nodes"], report
    by_node = {a["node"]: a["frames_from"] for a in report["actors"]}
    assert sorted(by_node) == report["nodes"], report  # one inference actor per node
    for node, sources in by_node.items():
        assert list(sources) == [node] and sources[node] > 0, report  # its own node's frames, only
    assert report["pool"]["remote_frames"] == 0, report
