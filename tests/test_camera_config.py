"""Camera configuration: sources, credentials from the environment, transport, health thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flux_secu.config import CameraConfig, ConfigError

from .conftest import build_config


def _camera(tmp_path: Path, **fields: Any) -> CameraConfig:
    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["cameras"][0].update(fields)

    return build_config(tmp_path, edit).sites[0].cameras[0]


def test_credentials_come_from_the_environment_and_stay_out_of_repr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "p@ss:w/rd")
    cam = _camera(tmp_path, source="rtsp://10.0.0.5:554/Streaming/101", username="viewer",
                  password="${CAM_PASSWORD}", transport="udp")
    assert cam.url() == "rtsp://viewer:p%40ss%3Aw%2Frd@10.0.0.5:554/Streaming/101"
    assert cam.transport == "udp" and "p@ss" not in repr(cam)
    assert cam.video_loss_after_s == 5.0  # the default


@pytest.mark.parametrize(("fields", "message"), [
    ({"source": "ftp://cam/x"}, r"^sites\[0\]\.cameras\[0\]\.source: unsupported scheme 'ftp'"),
    ({"transport": "udp"}, r"^sites\[0\]\.cameras\[0\]: field 'transport' applies to rtsp:// sources only$"),
    ({"source": "http://cam/video.mjpg", "transport": "tcp"}, r"field 'transport' applies to rtsp://"),
    ({"source": "rtsp://cam/x", "transport": "quic"}, r"^sites\[0\]\.cameras\[0\]\.transport: Input"),
    ({"username": "u"}, r"field 'username' needs a URL source"),
    ({"source": "rtsp://cam/x", "password": "p"}, r"field 'password' needs field 'username'"),
    ({"source": "rtsp://a:b@cam/x", "username": "u"}, r"the source URL already holds credentials"),
    ({"video_loss_after_s": 0}, r"^sites\[0\]\.cameras\[0\]\.video_loss_after_s: Input should be greater"),
    ({"health": {"covered_ratio": 2}}, r"^sites\[0\]\.cameras\[0\]\.health\.covered_ratio: Input should be"),
    ({"health": {"frozen": 1}}, r"^sites\[0\]\.cameras\[0\]\.health\.frozen: unknown field$"),
])
def test_bad_camera_fields_are_one_line_errors_naming_the_field(
        tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _camera(tmp_path, **fields)
    assert "\n" not in str(err.value)


def test_a_password_in_a_bad_url_is_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _camera(tmp_path, source="gopher://admin:hunter2@cam/x")
    assert "hunter2" not in str(err.value)
