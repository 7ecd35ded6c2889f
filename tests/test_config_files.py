"""The shipped example agglomeration and `flux-secu config skeleton`, through `flux-secu check` as an
integrator runs it (a real process, the environment it needs)."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from argon2 import PasswordHasher

from flux_secu.config import load_config, parse_config
from flux_secu.rules.calendar import site_calendar
from flux_secu.skeleton import skeleton

from .conftest import FLUX_SECU, MODEL, ROOT

EXAMPLE = ROOT / "configs" / "agglomeration.example.yaml"


def variables_of(text: str) -> set[str]:
    """The ``${NAME}`` the loader expands (comments are not read)."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", body))


def environment_for(text: str) -> dict[str, str]:
    """A value for every variable the file names: argon2 hashes for API users (a cheap profile), long
    random-looking secrets for the rest (panic keys need 16 characters)."""
    hashed = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("mot-de-passe-de-test")
    return {v: hashed if v.startswith("FLUX_HASH_") else f"s3cr3t-{v.lower()}-0123456789"
            for v in variables_of(text)}


def check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLUX_SECU), "check", str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_the_example_agglomeration_passes_check_with_its_environment() -> None:
    text = EXAMPLE.read_text()
    env = environment_for(text)
    result = check(EXAMPLE, env)
    assert result.returncode == 0, result.stderr
    assert "10 site(s), 60 camera(s)" in result.stdout
    # Without one of its variables, check names the field that needs it.
    missing = check(EXAMPLE, {k: v for k, v in env.items() if k != "FLUX_CAM_PASSWORD_PORT"})
    assert missing.returncode == 2 and "FLUX_CAM_PASSWORD_PORT is not set" in missing.stderr
    assert "s3cr3t" not in missing.stderr

    # The header lists exactly the variables the file uses: an integrator exports them from that list.
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    listed = set(re.findall(r"\bFLUX_[A-Z0-9_]+\b", header))
    assert listed == variables_of(text), listed ^ variables_of(text)


def test_the_example_agglomeration_has_what_an_integrator_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    text = EXAMPLE.read_text()
    for name, value in environment_for(text).items():
        monkeypatch.setenv(name, value)
    cfg = load_config(EXAMPLE)
    cameras = [c for s in cfg.sites for c in s.cameras]
    assert len(cfg.sites) == 10 and len(cameras) == 60
    assert all(c.source.startswith("rtsp://") and c.username and c.password for c in cameras)
    raw = yaml.safe_load(text)
    raw_cameras = [c for s in raw["sites"] for c in s["cameras"]]
    assert all(c["password"].startswith("${") for c in raw_cameras)  # no password in the file itself
    assert sum(1 for c in cameras if c.zones) >= 3 and sum(1 for c in cameras if c.privacy_masks) >= 2
    assert {sp.driver for s in cfg.sites for sp in s.speakers} == {"file", "command", "axis", "sip"}
    assert all(s.escalation.rota and s.escalation.police for s in cfg.sites)
    assert sum(1 for s in cfg.sites if s.panic) >= 3
    assert cfg.store.kind == "redis" and raw["store"]["url"].startswith("redis://:${FLUX_REDIS_PASSWORD}@")
    assert cfg.api is not None and cfg.api.host == "127.0.0.1" and cfg.api.secure_cookies
    assert cfg.notifications.public_url.startswith("https://")
    # Winter and summer hours: Nord closes at 17:00 on a winter Monday, at 18:30 on a summer one;
    # a holiday is closed.
    nord = site_calendar(cfg, next(s for s in cfg.sites if s.id == "nord"))

    def at(local: str) -> datetime:
        return datetime.fromisoformat(local).replace(tzinfo=nord.timezone)

    assert not nord.is_open(at("2027-01-18T17:30:00")) and nord.is_open(at("2027-06-14T17:30:00"))
    assert not nord.is_open(at("2027-07-14T10:00:00"))  # a Wednesday, but 14 July
    assert all(s.holidays for s in cfg.sites)
    assert sum(1 for s in cfg.sites if s.seasonal_hours) >= 8


def test_skeleton_prints_a_file_that_check_accepts(tmp_path: Path) -> None:
    made = subprocess.run([str(FLUX_SECU), "config", "skeleton", "--sites", "10", "--cameras-per-site", "6",
                           "--model", str(MODEL)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    path = tmp_path / "agglo.yaml"
    path.write_text(made.stdout)
    env = {v: "mot-de-passe-camera" for v in variables_of(made.stdout)}
    assert len(env) == 10  # one camera password per site, from the environment
    result = check(path, env)
    assert result.returncode == 0, result.stderr
    assert "10 site(s), 60 camera(s)" in result.stdout


def test_skeleton_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = skeleton(3, 12, model=str(MODEL), year=2027)
    for name in variables_of(text):
        monkeypatch.setenv(name, "x")
    cfg = parse_config(yaml.safe_load(text), tmp_path)
    assert [s.id for s in cfg.sites] == ["site-01", "site-02", "site-03"]
    assert [c.id for c in cfg.sites[2].cameras][-1] == "site-03-cam-12"
    assert all(s.opening_hours.mon and s.seasonal_hours and s.holidays for s in cfg.sites)
    assert cfg.notifications.dry_run  # nobody is notified before the contacts are real
    with pytest.raises(ValueError, match="at least one site"):
        skeleton(0, 1, model="m.onnx", year=2027)
