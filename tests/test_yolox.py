from __future__ import annotations

import cv2
import numpy as np
import pytest

from flux_secu.config import ModelConfig
from flux_secu.detect import yolox
from flux_secu.detect.letterbox import LetterboxSpec, letterbox, unletterbox
from flux_secu.detect.model import Detector
from flux_secu.detect.nms import batched_nms, nms

from .conftest import ASSETS, LABELS, MODEL

# Reference detections of the shared assets README for images/bus.jpg.
BUS_REFERENCE = [
    ("bus", 0.91, (13, 231, 801, 735)),
    ("person", 0.85, (50, 394, 214, 898)),
    ("person", 0.81, (219, 402, 347, 855)),
    ("person", 0.69, (685, 450, 810, 874)),
]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(ModelConfig(path=MODEL, labels=LABELS))


def test_bus_matches_reference_detections(detector: Detector) -> None:
    image = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    canvas, geometry = letterbox(image, detector.spec)
    (found,) = detector.detect([canvas], [geometry])
    assert len(found) == len(BUS_REFERENCE)
    rows = sorted(zip(found.class_id, found.confidence, found.xyxy, strict=True), key=lambda r: -r[1])
    for (label, score, box), (cls, conf, xyxy) in zip(BUS_REFERENCE, rows, strict=True):
        assert detector.labels[cls] == label
        assert conf == pytest.approx(score, abs=0.02)
        np.testing.assert_allclose(xyxy, box, atol=3)


def test_grayscale_ir_frame_is_replicated_and_detected(detector: Detector) -> None:
    gray = cv2.imread(str(ASSETS / "images" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    assert gray.ndim == 2
    canvas, geometry = letterbox(gray, detector.spec)
    assert canvas.shape == (416, 416, 3)
    (found,) = detector.detect([canvas], [geometry])
    assert len(found.of_class(0, 0.5)) == 1


def test_letterbox_top_left_and_back() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    canvas, geo = letterbox(frame, LetterboxSpec(416))
    assert canvas.shape == (416, 416, 3)
    assert geo.scale == pytest.approx(0.65)
    assert (canvas[234:, :, :] == 114).all() and (canvas[:234, :, :] == 0).all()
    boxes = np.array([[65.0, 65.0, 130.0, 130.0], [400.0, 0.0, 416.0, 416.0]], np.float32)
    back = unletterbox(boxes, geo)
    np.testing.assert_allclose(back[0], [100, 100, 200, 200], atol=1e-3)
    assert back[1, 3] == 360  # clipped to the frame


def test_letterbox_centred() -> None:
    canvas, geo = letterbox(np.full((100, 200, 3), 255, np.uint8), LetterboxSpec(320, 0, centred=True))
    assert (geo.pad_x, geo.pad_y) == (0, 80)
    assert canvas[79, 0, 0] == 0 and canvas[80, 0, 0] == 255 and canvas[240, 0, 0] == 0


def test_nms_keeps_best_of_overlapping_and_separates_groups() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert list(nms(boxes, scores, 0.45)) == [1, 2]
    kept = batched_nms(boxes, scores, np.array([0, 1, 0], np.int32), 0.45)
    assert sorted(kept.tolist()) == [0, 1, 2]


def test_decode_rejects_wrong_anchor_count() -> None:
    geo = letterbox(np.zeros((10, 10, 3), np.uint8), LetterboxSpec(416))[1]
    with pytest.raises(ValueError, match="anchors"):
        yolox.decode(np.zeros((10, 85), np.float32), geo, 416, 0.3, 0.45)
