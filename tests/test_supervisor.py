"""Reload plans and pool autoscaling: the supervisor's decisions, without Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_secu.autoscale import PoolAutoscaler, PoolSample, batch_window
from flux_secu.config import AutoscaleConfig, Config, ConfigError, parse_config
from flux_secu.reload import ReloadError, check_applicable, plan_reload, with_camera, without_camera

from .conftest import build_config, site_yaml


def three_cameras(data: dict[str, Any]) -> None:
    cam = data["sites"][0]["cameras"][0]
    data["sites"][0]["cameras"] = [dict(cam, id=f"cam-{i}") for i in range(3)]


def edited(tmp_path: Path, *edits: Any) -> Config:
    def edit(data: dict[str, Any]) -> None:
        three_cameras(data)
        for change in edits:
            change(data)

    return build_config(tmp_path, edit)


def test_same_config_plans_nothing(tmp_path: Path) -> None:
    plan = plan_reload(edited(tmp_path), edited(tmp_path))
    assert plan.empty and plan.not_applicable == []
    assert plan.unchanged == ["cam-0", "cam-1", "cam-2"]


def test_changed_source_restarts_only_that_camera(tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"
    other.write_bytes(b"")

    def move(data: dict[str, Any]) -> None:
        data["sites"][0]["cameras"][1]["source"] = str(other)

    plan = plan_reload(edited(tmp_path), edited(tmp_path, move))
    assert [c.id for _, c in plan.restart] == ["cam-1"]
    assert plan.restart[0][1].source == str(other)
    assert plan.unchanged == ["cam-0", "cam-2"] and not plan.add and not plan.remove
    check_applicable(plan)


def test_added_removed_and_changed_zones_are_told_apart(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        cams = data["sites"][0]["cameras"]
        cams[2]["zones"] = [{"id": "quai", "polygon": [[0, 0], [1, 0], [1, 1]]}]
        cams.pop(0)
        cams.append(dict(cams[0], id="cam-9"))

    plan = plan_reload(edited(tmp_path), edited(tmp_path, change))
    assert plan.remove == ["cam-0"]
    assert [c.id for _, c in plan.add] == ["cam-9"]
    assert [c.id for _, c in plan.restart] == ["cam-2"]
    assert plan.unchanged == ["cam-1"]
    assert plan.summary()["restarted"] == ["cam-2"]


def test_pool_size_is_applied_live(tmp_path: Path) -> None:
    plan = plan_reload(edited(tmp_path), edited(tmp_path, lambda d: d.update(inference={"actors": 3})))
    assert plan.pool_actors == 3 and not plan.not_applicable


def test_other_changes_are_refused_naming_them(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["sites"][0]["escalation"]["ack_timeout_s"] = 60
        data["rules"]["confirm_hits"] = 2
        data["inference"] = {"max_batch": 8}

    plan = plan_reload(edited(tmp_path), edited(tmp_path, change))
    assert plan.not_applicable == ["inference.max_batch", "rules", "sites[site-test].escalation"]
    with pytest.raises(ReloadError, match=r"rules, sites\[site-test\]\.escalation"):
        check_applicable(plan)


def test_a_new_site_is_refused(tmp_path: Path) -> None:
    def add_site(data: dict[str, Any]) -> None:
        site = dict(data["sites"][0], id="site-b")
        site["cameras"] = [dict(site["cameras"][0], id="cam-b")]
        data["sites"].append(site)

    plan = plan_reload(edited(tmp_path), edited(tmp_path, add_site))
    assert plan.not_applicable == ["sites[site-b] (new site)"]


def test_runtime_add_and_remove_keep_the_config_valid(tmp_path: Path) -> None:
    config = edited(tmp_path)
    camera = config.sites[0].cameras[0].model_copy(update={"id": "cam-new"})
    grown = with_camera(config, "site-test", camera)
    assert [c.id for c in grown.sites[0].cameras] == ["cam-0", "cam-1", "cam-2", "cam-new"]
    assert [c.id for _, c in plan_reload(config, grown).add] == ["cam-new"]
    with pytest.raises(ValueError, match="already exists"):
        with_camera(grown, "site-test", camera)
    with pytest.raises(ValueError, match=r"unknown site 'nowhere' \(known: site-test\)"):
        with_camera(config, "nowhere", camera.model_copy(update={"id": "cam-x"}))
    shrunk = without_camera(grown, "cam-0")
    assert [c.id for c in shrunk.sites[0].cameras] == ["cam-1", "cam-2", "cam-new"]
    with pytest.raises(ValueError, match="unknown camera 'cam-0'"):
        without_camera(shrunk, "cam-0")
    single = build_config(tmp_path)
    with pytest.raises(ValueError, match="last one of site 'site-test'"):
        without_camera(single, "cam-test")


# --- autoscaling ----------------------------------------------------------------------------------------

AUTO = AutoscaleConfig(min_actors=1, max_actors=3, high_fill=0.75, low_fill=0.25, up_after=2, down_after=3)


def sample(actors: int, *, queued: int = 0, batches: int = 10, frames: int = 10) -> PoolSample:
    return PoolSample(actors=actors, queued=queued, batches=batches, frames=frames, max_batch=4)


def test_full_batches_add_an_actor_after_consecutive_looks_up_to_the_bound() -> None:
    scaler = PoolAutoscaler(AUTO)
    full = sample(1, batches=10, frames=36)  # 90 % full
    assert full.fill == pytest.approx(0.9)
    assert scaler.decide(full) == 1  # one look is not enough (a burst)
    assert scaler.decide(full) == 2
    assert scaler.decide(sample(2, batches=10, frames=36)) == 2  # the count starts again after a change
    assert scaler.decide(sample(2, batches=10, frames=36)) == 3
    for _ in range(5):
        assert scaler.decide(sample(3, batches=10, frames=40)) == 3  # never above max_actors


def test_a_deep_queue_is_saturation_even_with_small_batches() -> None:
    scaler = PoolAutoscaler(AUTO)
    assert scaler.decide(sample(1, queued=9, batches=10, frames=20)) == 1
    assert scaler.decide(sample(1, queued=9, batches=10, frames=20)) == 2


def test_an_idle_pool_shrinks_slowly_down_to_the_bound_and_a_busy_look_resets_the_count() -> None:
    scaler = PoolAutoscaler(AUTO)
    idle = sample(3, batches=10, frames=10)  # 25 % full, nothing queued
    assert [scaler.decide(idle) for _ in range(2)] == [3, 3]
    assert scaler.decide(sample(3, batches=10, frames=24)) == 3  # a middling look breaks the streak
    assert [scaler.decide(idle) for _ in range(3)] == [3, 3, 2]
    one = sample(1, batches=0, frames=0)
    assert [scaler.decide(one) for _ in range(6)] == [1] * 6  # never below min_actors


def test_a_pool_outside_the_bounds_is_brought_inside_at_once() -> None:
    scaler = PoolAutoscaler(AUTO)
    assert scaler.decide(sample(6)) == 3
    assert PoolAutoscaler(AutoscaleConfig(min_actors=2, max_actors=4)).decide(sample(1)) == 2


def test_batch_window_counts_batches_between_polls_and_survives_a_pool_restart() -> None:
    assert batch_window({}, {1: 3, 4: 2}) == (5, 11)
    assert batch_window({1: 3, 4: 2}, {1: 4, 4: 5}) == (4, 13)
    assert batch_window({1: 40, 4: 2}, {1: 2}) == (2, 2)  # went backwards: a new pool, all of it is new


def test_autoscale_bounds_are_checked_in_the_config(tmp_path: Path) -> None:
    data = yaml.safe_load(site_yaml())
    data["inference"] = {"autoscale": {"min_actors": 4, "max_actors": 2}}
    with pytest.raises(ConfigError, match=r"inference\.autoscale: min_actors must not exceed max_actors"):
        parse_config(data, tmp_path)
