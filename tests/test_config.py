from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from flux_secu.config import ConfigError, load_config

from .conftest import FLUX_SECU, ROOT


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLUX_SECU), "check", str(path)], capture_output=True, text=True, timeout=60)


def test_demo_config_is_valid() -> None:
    result = check(ROOT / "configs" / "demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "2 camera(s)" in result.stdout


def test_ack_secret_length_and_link_ttl_are_bounded(tmp_path: Path) -> None:
    from .conftest import build_config

    def with_notifications(**fields: Any) -> Any:
        return lambda d: d["notifications"].update(fields)

    for fields, where in [({"ack_secret": "short"}, "ack_secret"),
                          ({"ack_link_ttl_s": 30 * 86400}, "ack_link_ttl_s")]:
        with pytest.raises(ConfigError) as err:
            build_config(tmp_path, with_notifications(**fields))
        assert where in str(err.value)
        assert "short" not in str(err.value).replace("ack_secret", "")  # never the secret itself


def test_valid_config_resolves_paths_and_secrets(config_file: Path) -> None:
    cfg = load_config(config_file)
    assert cfg.store.path == config_file.parent / "var" / "flux-secu.db"
    channels = cfg.sites[0].escalation.contacts[0].channels
    assert [c.get_secret_value() for c in channels] == ["json://127.0.0.1:9/s3cr3t-token"]
    # Secrets stay out of the repr and of a dump (what Ray and logs would show).
    assert "s3cr3t-token" not in repr(cfg) and "s3cr3t-token" not in str(cfg.model_dump())
    assert cfg.sites[0].opening_hours.wed[1].start.hour == 13


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ("detect_fps: 5", "detect_fps: 5\n        fps_typo: 3", "sites[0].cameras[0].fps_typo",
         "unknown field"),
        ("detect_fps: 5", "detect_fps: fast", "sites[0].cameras[0].detect_fps", "valid number"),
        ("yolox_nano.onnx", "missing_model.onnx", "model.path", "file not found"),
        ('wed: ["08:30-12:00"', 'wed: ["8h30-12:00"', "sites[0].opening_hours.wed[0]", "HH:MM-HH:MM"),
        ("timezone: Europe/Paris", "timezone: Europe/Lyon", "timezone", "unknown timezone"),
        ("${NOTIFY_TOKEN_FOR_TESTS}", "${UNSET_SECRET_FOR_TESTS}",
         "sites[0].escalation.contacts[0].channels[0]", "UNSET_SECRET_FOR_TESTS is not set"),
        ("    cameras:", '    seasonal_hours: [{from: "04-31", until: "09-30", opening_hours: {}}]\n'
         "    cameras:", "sites[0].seasonal_hours[0].from", "'MM-DD'"),
    ],
)
def test_bad_config_exits_2_naming_field_and_reason(
    config_file: Path, old: str, new: str, field: str, reason: str
) -> None:
    text = config_file.read_text()
    assert old in text
    config_file.write_text(text.replace(old, new, 1))
    result = check(config_file)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{field}: " in lines[0] and reason in lines[0]
    assert "Traceback" not in result.stderr


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  path: [unclosed\n")
    result = check(broken)
    assert result.returncode == 2 and "(yaml) line" in result.stderr
    result = check(tmp_path / "absent.yaml")
    assert result.returncode == 2 and "absent.yaml" in result.stderr


def test_secret_is_never_in_error_messages(config_file: Path) -> None:
    text = config_file.read_text().replace("detect_fps: 5", "detect_fps: -1")
    config_file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    assert "s3cr3t" not in str(info.value)
    assert "sites[0].cameras[0].detect_fps" in str(info.value)
