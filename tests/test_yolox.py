from __future__ import annotations

import cv2
import numpy as np
import pytest

from flux_secu.config import ModelConfig
from flux_secu.detect import yolox
from flux_secu.detect.fitting import fitted_model, proven
from flux_secu.detect.letterbox import LetterboxSpec, letterbox, unletterbox
from flux_secu.detect.model import Detector
from flux_secu.detect.nms import batched_nms, nms
from flux_secu.rules.tracking import iou_matrix

from .conftest import ASSETS, LABELS, MODEL, ONE_BY_ONE_CLIP

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


@pytest.mark.parametrize("fit_canvas", [False, True], ids=["square canvas (the README's)", "trimmed canvas"])
def test_bus_matches_reference_detections(fit_canvas: bool) -> None:
    detector = Detector(ModelConfig(path=MODEL, labels=LABELS, fit_canvas=fit_canvas))
    image = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    canvas, geometry = letterbox(image, detector.spec)
    assert canvas.shape == ((416, 320, 3) if fit_canvas else (416, 416, 3))
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


# --- canvases trimmed to the frame (detect/fitting.py) ------------------------------------------------


def test_letterbox_trimmed_to_the_frame_with_a_stride() -> None:
    spec = LetterboxSpec(416, stride=32)
    shapes = {(360, 640): (256, 416), (1080, 1920): (256, 416), (480, 640): (320, 416),
              (640, 360): (416, 256), (500, 500): (416, 416)}
    for (h, w), expected in shapes.items():
        canvas, geo = letterbox(np.zeros((h, w, 3), np.uint8), spec)
        assert canvas.shape == (*expected, 3) and (geo.canvas_height, geo.canvas_width) == expected
    canvas, geo = letterbox(np.zeros((360, 640, 3), np.uint8), spec)
    assert (canvas[234:] == 114).all() and (canvas[:234] == 0).all()  # top-left, padded to the stride
    assert geo.scale == pytest.approx(0.65)


def test_a_fitted_detector_sees_what_the_square_one_sees(detector: Detector) -> None:
    square = Detector(ModelConfig(path=MODEL, labels=LABELS, fit_canvas=False))
    assert detector.fitted and detector.spec.stride == 32
    assert not square.fitted and square.spec.stride == 0
    capture = cv2.VideoCapture(str(ONE_BY_ONE_CLIP))  # 768x432: 416x256 canvases instead of 416x416
    frames, persons = 0, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames += 1
        if frames % 20:
            continue
        found = []
        for model in (detector, square):
            canvas, geometry = letterbox(frame, model.spec)
            (detections,) = model.detect([canvas], [geometry])
            found.append(detections.of_class(0, 0.25))
        trimmed, full = found
        assert len(trimmed) == len(full), frames
        if len(full):
            assert iou_matrix(trimmed.xyxy, full.xyxy).max(axis=1).min() > 0.85, frames
            assert np.abs(np.sort(trimmed.confidence) - np.sort(full.confidence)).max() < 0.1, frames
        persons += len(full)
    assert persons >= 30  # the clip's people were there to compare


def test_canvases_of_several_shapes_share_a_batch(detector: Detector) -> None:
    portrait = cv2.imread(str(ASSETS / "images" / "bus.jpg"))  # 810x1080: a 320x416 canvas
    landscape = cv2.resize(portrait, (640, 360))  # 416x256
    boxed = [letterbox(image, detector.spec) for image in (portrait, landscape)]
    assert {c.shape for c, _ in boxed} == {(416, 320, 3), (256, 416, 3)}
    together = detector.detect([c for c, _ in boxed], [g for _, g in boxed])
    for (canvas, geometry), found in zip(boxed, together, strict=True):
        (alone,) = detector.detect([canvas], [geometry])
        np.testing.assert_allclose(found.xyxy, alone.xyxy, atol=1e-3)
        assert len(found.of_class(0, 0.5)) >= 3  # the bus's people, in both shapes


def test_a_graph_tied_to_its_input_size_keeps_the_square_canvas() -> None:
    import onnxruntime as ort

    # NanoDet's channel shuffle reshapes to [1, 2, 58, 40, 40]: only a 320x320 input fits it.
    path = ASSETS / "models" / "nanodet_m_320.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    original = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    serialised = fitted_model(path)
    assert serialised is not None
    relaxed = ort.InferenceSession(serialised, options, providers=["CPUExecutionProvider"])
    assert not proven(original, relaxed, 320, 32, lambda h, w: (h // 8) * (w // 8))
    nanodet = Detector(ModelConfig(path=path, kind="nanodet", labels=LABELS))
    assert not nanodet.fitted and nanodet.spec.stride == 0
