"""Evaluation manifest, incident matching and metrics (pure: no Ray, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_secu.config import load_config
from flux_secu.evaluation import (
    ManifestError,
    Presence,
    Raised,
    check_cameras,
    load_manifest,
    metrics,
    parse_manifest,
    percentile,
    score_clip,
)

from .conftest import LOWLIGHT_CLIP, ROOT

ONE_BY_ONE = [Presence(start_s=s, end_s=e) for s, e in
              [(6.3, 19.1), (22.8, 44.3), (50.6, 69.4), (74.5, 86.5), (93.2, 119.4), (123.7, 135.8)]]


def raised(*times: float, kind: str = "intrusion") -> list[Raised]:
    return [Raised(t, kind) for t in times]


# --- matching ---------------------------------------------------------------------------------------


def test_one_incident_per_presence_is_perfect_and_latency_counts_from_the_start() -> None:
    score = score_clip(ONE_BY_ONE, raised(6.6, 23.2, 51.2, 75.2, 93.2, 124.2), tolerance_s=1.0)
    assert (len(score.matches), score.false_positives, score.misses) == (6, [], [])
    assert [round(lat, 3) for lat in score.latencies_s] == [0.3, 0.4, 0.6, 0.7, 0.0, 0.5]
    m = metrics([score])
    assert (m["precision"], m["recall"], m["latency_p50_s"], m["latency_p95_s"]) == (1.0, 1.0, 0.45, 0.675)


def test_before_the_start_or_after_the_tolerance_is_a_false_positive_and_the_presence_a_miss() -> None:
    presence = [Presence(start_s=10.0, end_s=20.0)]
    early = score_clip(presence, raised(9.9), tolerance_s=1.0)
    late = score_clip(presence, raised(21.01), tolerance_s=1.0)
    for score in (early, late):
        assert (score.matches, len(score.false_positives), score.misses) == ([], 1, presence)
    edge = score_clip(presence, raised(10.0, 21.0), tolerance_s=1.0)  # both ends are inside
    assert len(edge.matches) == 1 and edge.matches[0].clip_time_s == 10.0 and len(edge.false_positives) == 1


def test_a_split_presence_counts_its_second_incident_as_a_false_positive() -> None:
    score = score_clip(ONE_BY_ONE[:1], raised(12.0, 7.0), tolerance_s=1.0)
    assert [m.clip_time_s for m in score.matches] == [7.0]  # the earliest incident is the alert
    assert score.false_positives == raised(12.0)
    assert metrics([score])["precision"] == 0.5


def test_overlapping_windows_still_match_both_presences() -> None:
    # With a 5 s tolerance the first window runs to 25 s, over the second presence (22-30 s).
    # Incident 21 s must go to the first presence, 23 s to the second: nobody missed.
    presences = [Presence(start_s=10.0, end_s=20.0), Presence(start_s=22.0, end_s=30.0)]
    score = score_clip(presences, raised(23.0, 21.0), tolerance_s=5.0)
    assert [(m.presence.start_s, m.clip_time_s) for m in score.matches] == [(10.0, 21.0), (22.0, 23.0)]
    assert score.misses == [] and score.false_positives == []
    # Greedy by window end: an incident inside both windows goes to the one that closes first.
    score = score_clip(presences, raised(24.0, 26.0), tolerance_s=5.0)
    assert [(m.presence.start_s, m.clip_time_s) for m in score.matches] == [(10.0, 24.0), (22.0, 26.0)]


def test_kinds_must_agree() -> None:
    score = score_clip([Presence(start_s=1.0, end_s=5.0)], raised(2.0, kind="activity"), tolerance_s=1.0)
    assert len(score.false_positives) == 1 and len(score.misses) == 1
    vehicle = [Presence(kind="activity", start_s=1.0, end_s=5.0)]
    assert len(score_clip(vehicle, raised(2.0, kind="activity"), tolerance_s=1.0).matches) == 1


def test_nothing_expected_nothing_raised_has_no_precision_nor_recall() -> None:
    quiet = score_clip([], [], tolerance_s=1.0)
    m = metrics([quiet])
    assert (m["precision"], m["recall"], m["latency_p50_s"], m["incidents"]) == (None, None, None, 0)
    daytime = score_clip([], raised(7.0), tolerance_s=1.0)  # the open site raised something
    assert metrics([daytime])["precision"] == 0.0


def test_overall_metrics_pool_the_clips() -> None:
    night = score_clip(ONE_BY_ONE[:2], raised(6.5, 30.0), tolerance_s=1.0)  # two hits
    missed = score_clip(ONE_BY_ONE[:1], [], tolerance_s=1.0)  # one miss
    day = score_clip([], raised(7.0), tolerance_s=1.0)  # one false positive
    m = metrics([night, missed, day])
    counts = ("presences", "incidents", "matched", "false_positives", "misses")
    assert [m[k] for k in counts] == [3, 3, 2, 1, 1]
    assert (m["precision"], m["recall"]) == (0.6667, 0.6667)
    assert (m["latency_p50_s"], m["latency_p95_s"]) == (3.7, 6.85)  # latencies 0.2 and 7.2


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)


# --- manifest ---------------------------------------------------------------------------------------


def entry(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "clip": LOWLIGHT_CLIP.name, "camera": "cam-test", "at": "2026-11-25T23:00:00+01:00",
        "expected": [{"start_s": 6.3, "end_s": 19.1}],
    }
    return {**base, **changes}


def test_manifest_paths_are_relative_to_it_and_defaults_apply() -> None:
    manifest = parse_manifest({"entries": [entry()]}, LOWLIGHT_CLIP.parent)
    (only,) = manifest.entries
    assert only.clip.resolve() == LOWLIGHT_CLIP.resolve() and only.tolerance_s == 1.0
    assert only.expected[0].kind == "intrusion"
    assert only.label == f"{LOWLIGHT_CLIP.name}@2026-11-25T23:00:00+01:00"


@pytest.mark.parametrize(("changes", "message"), [
    ({"at": "2026-11-25T23:00:00"}, "entries[0].at: Input should have timezone info"),
    ({"clip": "nope.mp4"}, "entries[0].clip: file not found: "),
    ({"expected": [{"start_s": 5, "end_s": 4}]}, "entries[0].expected[0]: end_s must not be before start_s"),
    ({"expected": [{"start_s": 5, "end": 6}]}, "entries[0].expected[0].end: unknown field"),
    ({"expected": [{"kind": "ghost", "start_s": 1, "end_s": 2}]}, "entries[0].expected[0].kind: Input"),
    ({"tolerance_s": -1}, "entries[0].tolerance_s: Input should be greater than or equal to 0"),
])
def test_manifest_errors_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest({"entries": [entry(**changes)]}, LOWLIGHT_CLIP.parent)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_manifest_needs_entries_with_distinct_names() -> None:
    with pytest.raises(ManifestError, match=r"entries: List should have at least 1 item"):
        parse_manifest({"entries": []}, LOWLIGHT_CLIP.parent)
    with pytest.raises(ManifestError, match=r"\(top level\): expected a mapping"):
        parse_manifest([entry()], LOWLIGHT_CLIP.parent)
    twice = {"entries": [entry(name="nuit"), entry(name="nuit")]}
    with pytest.raises(ManifestError, match=r"entries\[1\]: another entry is also called 'nuit'"):
        parse_manifest(twice, LOWLIGHT_CLIP.parent)


def test_manifest_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("entries: [\n")
    with pytest.raises(ManifestError, match=r"\(yaml\) line"):
        load_manifest(broken)
    with pytest.raises(ManifestError, match=r"\(file\)"):
        load_manifest(tmp_path / "missing.yaml")


def test_shipped_manifest_loads_and_names_cameras_of_its_config() -> None:
    folder = ROOT / "configs" / "evaluation"
    manifest = load_manifest(folder / "shipped.yaml")
    config = load_config(folder / "site.yaml")
    check_cameras(manifest, config)
    assert [e.label for e in manifest.entries] == ["one-by-one-night", "lowlight-night", "lowlight-day"]
    assert sum(len(e.expected) for e in manifest.entries) == 8
    bad = manifest.model_copy(update={"entries": [manifest.entries[0].model_copy(update={"camera": "x"})]})
    with pytest.raises(ManifestError, match=r"entries\[0\]\.camera: unknown camera 'x' \(known: "):
        check_cameras(bad, config)
