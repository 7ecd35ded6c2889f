"""Evidence: privacy masks, the frame ring, snapshots and clips, retention with legal hold."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import yaml

from flux_secu.config import ConfigError, parse_config
from flux_secu.evidence.privacy import PrivacyMask
from flux_secu.evidence.recorder import CLIP, SNAPSHOT, EvidenceRecorder, EvidenceRequest, EvidenceSettings
from flux_secu.evidence.retention import DAY_S, on_legal_hold, purge_expired, set_legal_hold
from flux_secu.evidence.ring import FrameRing, StoredFrame
from flux_secu.rules.incident import Incident, IncidentKind
from flux_secu.store import SQLiteStore

from .conftest import ASSETS, FLUX_SECU, LOWLIGHT_CLIP, ONE_BY_ONE_CLIP, site_yaml

FACES = ASSETS / "images" / "zidane.jpg"
LEFT_HALF = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]


def sharpness(image: npt.NDArray[np.uint8]) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def clip_frames(path: Path, every: int = 1, limit: int = 10_000) -> list[npt.NDArray[np.uint8]]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    index = 0
    while len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            frames.append(frame)
        index += 1
    capture.release()
    return frames


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=codec_name,pix_fmt,nb_read_frames,width,height", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)["streams"][0]


# --- privacy masks --------------------------------------------------------------------------------

def test_privacy_mask_makes_the_region_unrecognisable_and_leaves_the_rest() -> None:
    image = cv2.imread(str(FACES))
    masked = PrivacyMask([LEFT_HALF]).apply(image)
    half = image.shape[1] // 2
    # The faces on the left are pixelated and blurred: almost no fine detail is left.
    assert sharpness(masked[:, : half - 30]) < sharpness(image[:, : half - 30]) / 20
    assert np.abs(masked[:, : half - 30].astype(int) - image[:, : half - 30]).mean() > 5
    # Outside the mask, every pixel is as it was; the original image is not modified.
    assert np.array_equal(masked[:, half + 1:], image[:, half + 1:])
    assert not np.array_equal(masked, image) and np.array_equal(cv2.imread(str(FACES)), image)


def test_no_mask_is_free() -> None:
    image = cv2.imread(str(FACES))
    assert PrivacyMask([]).apply(image) is image


# --- the ring -------------------------------------------------------------------------------------

def test_ring_forgets_old_frames_unless_a_clip_pins_them() -> None:
    ring = FrameRing(keep_s=2.0)
    for i in range(10):
        ring.push(StoredFrame(float(i), b"x"))
    assert [f.ts for f in ring.frames] == [7.0, 8.0, 9.0]
    ring.pins.append(8.0)
    for i in range(10, 15):
        ring.push(StoredFrame(float(i), b"x"))
    assert ring.frames[0].ts == 8.0 and ring.nearest(8.4) == StoredFrame(8.0, b"x")
    assert [f.ts for f in ring.between(9.0, 11.0)] == [9.0, 10.0, 11.0]


# --- snapshot and clip ----------------------------------------------------------------------------

def test_recorder_writes_a_masked_snapshot_with_boxes_and_an_h264_clip(tmp_path: Path) -> None:
    settings = EvidenceSettings(tmp_path, before_s=2.0, after_s=3.0, width=640, fps=5.0)
    recorder = EvidenceRecorder(settings, PrivacyMask([LEFT_HALF]))
    frames = clip_frames(ONE_BY_ONE_CLIP, every=5, limit=60)  # the clip is 25 fps: 5 fps kept
    height, width = frames[0].shape[:2]
    box = [width * 0.6, height * 0.2, width * 0.8, height * 0.9]  # right half: not masked
    request = EvidenceRequest("intrusion-cam-1", 4.0, [{"label": "person", "score": 0.9, "box": box}],
                              (width, height))
    ready: list[EvidenceRequest] = []
    for i, frame in enumerate(frames[:21]):  # t = 0.0 .. 4.0 s
        ready += recorder.push(i / 5, frame)
    snapshot, clip_now = recorder.request(request)
    assert snapshot is not None and not clip_now and ready == []
    # The ring keeps the frames from t = 2 s for the clip even past its own horizon.
    for i, frame in enumerate(frames[21:], start=21):
        ready += recorder.push(i / 5, frame)
    assert ready == [request]  # handed out once, at t >= 7 s

    stored = cv2.imread(str(snapshot.path))
    assert snapshot.path == tmp_path / "intrusion-cam-1" / SNAPSHOT and stored.shape[1] == min(640, width)
    scale = stored.shape[1] / width
    original = cv2.resize(frames[20], (stored.shape[1], stored.shape[0]))
    left = slice(0, stored.shape[1] // 2 - 30)
    assert sharpness(stored[:, left]) < sharpness(original[:, left]) / 5  # the mask is in the file
    # The box is drawn in red where the detection was.
    x1, y1 = round(box[0] * scale), round(box[1] * scale)
    edge = stored[y1 + 5: y1 + 40, x1 - 1: x1 + 2].reshape(-1, 3).mean(axis=0)
    assert edge[2] > 150 and edge[0] < 100 and edge[1] < 100

    clip = recorder.clip(request)
    assert clip is not None and clip.path == tmp_path / "intrusion-cam-1" / CLIP
    info = probe(clip.path)
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert int(str(info["nb_read_frames"])) == clip.frames == 26  # t = 2.0 .. 7.0 s at 5 fps
    first = clip_frames(clip.path, limit=1)[0]
    assert sharpness(first[:, left]) < sharpness(cv2.resize(frames[10], first.shape[1::-1])[:, left]) / 5
    assert recorder.ring.pins == []


def test_a_clip_asked_after_the_source_ended_is_written_with_what_there_is(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(EvidenceSettings(tmp_path, before_s=1.0, after_s=10.0), PrivacyMask([]))
    for i, frame in enumerate(clip_frames(ONE_BY_ONE_CLIP, every=5, limit=10)):
        recorder.push(i / 5, frame)
    assert recorder.source_ended() == []
    snapshot, ready = recorder.request(EvidenceRequest("intrusion-x", 1.6))
    assert snapshot is not None and ready
    clip = recorder.clip(EvidenceRequest("intrusion-x", 1.6))
    assert clip is not None and clip.frames == 7  # 0.6 .. 1.8 s
    assert recorder.latest_jpeg() is not None


def test_incident_ids_cannot_escape_the_evidence_folder(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(EvidenceSettings(tmp_path), PrivacyMask([]))
    recorder.push(0.0, np.zeros((36, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="not an incident id"):
        recorder.request(EvidenceRequest("../etc", 0.0))


# --- retention ------------------------------------------------------------------------------------

def _incident(store: SQLiteStore, directory: Path, name: str, opened_at: float) -> Path:
    store.open_incident(Incident(name, IncidentKind.INTRUSION, "site-a", "cam-a", "person", opened_at))
    folder = directory / name
    folder.mkdir(parents=True)
    (folder / SNAPSHOT).write_bytes(b"jpeg")
    (folder / CLIP).write_bytes(b"mp4")
    return folder


def test_retention_purge_deletes_old_evidence_except_on_legal_hold(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    evidence = tmp_path / "evidence"
    now = time.time()
    old = _incident(store, evidence, "intrusion-old", now - 31 * DAY_S)
    held = _incident(store, evidence, "intrusion-held", now - 45 * DAY_S)
    recent = _incident(store, evidence, "intrusion-recent", now - 29 * DAY_S)
    set_legal_hold(store, "intrusion-held", True, "gendarmerie", now - 40 * DAY_S)

    report = purge_expired(store, evidence, now, retention_days=30)
    assert report.purged == ["intrusion-old"] and report.held == ["intrusion-held"]
    assert not old.exists() and held.exists() and recent.exists()
    purged = [e for e in store.events("intrusion-old") if e.kind == "evidence_purged"]
    assert len(purged) == 1 and purged[0].data["files"] == [CLIP, SNAPSHOT]
    # The incident itself stays: only the images go.
    kept = {s.incident.id for s in store.incidents()}
    assert kept == {"intrusion-old", "intrusion-held", "intrusion-recent"}
    # A second purge finds nothing more to do.
    assert purge_expired(store, evidence, now + 60, retention_days=30).purged == []

    set_legal_hold(store, "intrusion-held", False, "admin", now - 1)
    assert not on_legal_hold(store.events("intrusion-held"))
    assert purge_expired(store, evidence, now, retention_days=30).purged == ["intrusion-held"]
    assert not held.exists() and recent.exists()
    with pytest.raises(KeyError, match="unknown incident"):
        set_legal_hold(store, "intrusion-nope", True, "admin", now)


def test_retention_longer_than_30_days_is_refused(tmp_path: Path) -> None:
    text = site_yaml(camera_source=LOWLIGHT_CLIP) + "evidence:\n  retention_days: 90\n"
    with pytest.raises(ConfigError, match=r"evidence\.retention_days.*30"):
        parse_config(yaml.safe_load(text), base_dir=tmp_path)


# --- end to end -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_night_replay_keeps_a_masked_snapshot_and_a_clip_of_the_intrusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    text = site_yaml().replace(
        "        detect_fps: 5\n",
        "        detect_fps: 5\n        privacy_masks: [[[0, 0], [0.3, 0], [0.3, 1], [0, 1]]]\n",
    )
    config = tmp_path / "flux.yaml"
    config.write_text(text)
    result = subprocess.run(
        [str(FLUX_SECU), "evaluate", str(config), "--camera", "cam-test", "--clip", str(LOWLIGHT_CLIP),
         "--at", "2026-11-25T23:00:00+01:00", "--json", "--store", str(tmp_path / "eval.db")],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    incidents = [json.loads(line) for line in result.stdout.splitlines() if '"incident"' in line]
    assert incidents, result.stdout
    first = min(incidents, key=lambda i: i["clip_time_s"])
    snapshot, clip = Path(first["evidence"][SNAPSHOT]), Path(first["evidence"][CLIP])
    assert snapshot == tmp_path / "evidence" / first["id"] / SNAPSHOT and clip.parent == snapshot.parent

    # The snapshot is the frame the incident was confirmed on, masked, with the intruder's box.
    stored = cv2.imread(str(snapshot))
    fps = cv2.VideoCapture(str(LOWLIGHT_CLIP)).get(cv2.CAP_PROP_FPS)
    original = clip_frames(LOWLIGHT_CLIP, limit=round(first["clip_time_s"] * fps) + 1)[-1]
    original = cv2.resize(original, stored.shape[1::-1])
    band = slice(0, int(stored.shape[1] * 0.3) - 20)
    assert sharpness(stored[:, band]) < sharpness(original[:, band]) / 3
    red = (stored[..., 2] > 180) & (stored[..., 1] < 80) & (stored[..., 0] < 80)
    assert red.sum() > 50 and not (original[..., 2] > 180).sum() > red.sum()

    # The clip: 5 s before to 10 s after at detect_fps, in H.264 a browser plays.
    info = probe(clip)
    frames = int(str(info["nb_read_frames"]))
    assert info["codec_name"] == "h264"
    assert 5 * 15 - 5 <= frames <= 5 * 15 + 1, frames
    store = SQLiteStore(tmp_path / "eval.db")
    evidence = [e for e in store.events(first["id"]) if e.kind == "evidence"]
    assert sorted(e.data["file"] for e in evidence) == [CLIP, SNAPSHOT]

    assert {e.data["sha256"] for e in evidence} == {
        hashlib.sha256(snapshot.read_bytes()).hexdigest(), hashlib.sha256(clip.read_bytes()).hexdigest()}


def test_cli_holds_and_purges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN_FOR_TESTS", "s3cr3t-token")
    config = tmp_path / "flux.yaml"
    config.write_text(site_yaml() + "evidence:\n  retention_days: 7\n")
    store = SQLiteStore(tmp_path / "var" / "flux-secu.db")
    now = time.time()
    held = _incident(store, tmp_path / "var" / "evidence", "intrusion-a", now - 8 * DAY_S)
    gone = _incident(store, tmp_path / "var" / "evidence", "intrusion-b", now - 8 * DAY_S)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FLUX_SECU), "evidence", *args], capture_output=True, text=True, timeout=60)

    assert cli("hold", str(config), "intrusion-a", "--by", "police").returncode == 0
    refused = cli("hold", str(config), "intrusion-zz", "--by", "police")
    assert refused.returncode == 2 and "unknown incident 'intrusion-zz'" in refused.stderr
    done = cli("purge", str(config))
    assert done.returncode == 0
    assert "purged 1 incident(s) older than 7 days; 1 kept on legal hold" in done.stdout
    assert held.exists() and not gone.exists()
    assert [e.data["by"] for e in store.events("intrusion-a") if e.kind == "legal_hold"] == ["police"]
