"""Model adapters on real model output: the shipped YOLOX and NanoDet, and YOLOv8-style ONNX graphs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from flux_secu.config import ConfigError, ModelConfig, parse_config
from flux_secu.detect.classes import COCO80, nms_groups
from flux_secu.detect.letterbox import letterbox
from flux_secu.detect.model import Detector, ModelError
from flux_secu.detect.nms import nms
from flux_secu.detect.providers import choose_providers
from flux_secu.detect.yolov8 import Yolov8Adapter

from .conftest import ASSETS, LABELS, MODEL

NANODET = ASSETS / "models" / "nanodet_m_320.onnx"
COCO_MINI = ASSETS / "annotated" / "coco_val2017_mini"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detect_file(detector: Detector, path: Path):  # type: ignore[no-untyped-def]
    image = cv2.imread(str(path))
    canvas, geometry = letterbox(image, detector.spec)
    return detector.detect([canvas], [geometry])[0]


def test_nanodet_finds_the_bus_and_the_people_yolox_finds() -> None:
    nanodet = Detector(ModelConfig(path=NANODET, kind="nanodet", labels=LABELS))
    assert nanodet.size == 320 and nanodet.spec.centred and nanodet.spec.pad_value == 0
    found = detect_file(nanodet, ASSETS / "images" / "bus.jpg")
    reference = {  # the assets README's YOLOX reference boxes
        "bus": [(13, 231, 801, 735)],
        "person": [(50, 394, 214, 898), (219, 402, 347, 855), (685, 450, 810, 874)],
    }
    for label, boxes in reference.items():
        mine = found.of_class(COCO80.index(label), 0.35).xyxy
        for box in boxes:
            assert max((iou(np.array(box), m) for m in mine), default=0) > 0.7, (label, box, mine)


def test_yolox_person_recall_on_coco_mini() -> None:
    detector = Detector(ModelConfig(path=MODEL, labels=LABELS))
    data = json.loads((COCO_MINI / "instances_mini.json").read_text())
    matched = total = 0
    for image in data["images"]:
        truth = [a["bbox"] for a in data["annotations"]
                 if a["image_id"] == image["id"] and a["category_id"] == 1 and not a["iscrowd"]]
        found = detect_file(detector, COCO_MINI / "images" / image["file_name"]).of_class(0)
        used: set[int] = set()
        for x, y, w, h in truth:
            total += 1
            scores = [(iou(np.array([x, y, x + w, y + h]), box), i) for i, box in enumerate(found.xyxy)
                      if i not in used]
            best = max(scores, default=(0.0, -1))
            if best[0] >= 0.5:
                matched += 1
                used.add(best[1])
    assert total >= 20
    assert matched / total >= 0.7, f"person recall {matched}/{total}"


def test_io_binding_gives_the_same_output() -> None:
    config = ModelConfig(path=MODEL, labels=LABELS)
    plain, bound = Detector(config, io_binding=False), Detector(config, io_binding=True)
    canvas, _ = letterbox(cv2.imread(str(ASSETS / "images" / "zidane.jpg")), plain.spec)
    batch = plain.adapter.preprocess([canvas])
    np.testing.assert_array_equal(plain.run(batch)["output"], bound.run(batch)["output"])


def test_provider_preference_and_fallback() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["tensorrt", "cuda", "cpu"], available) == available
    assert choose_providers(["cpu"], ["TensorrtExecutionProvider", *available]) == ["CPUExecutionProvider"]
    assert choose_providers(["tensorrt", "cuda"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    detector = Detector(ModelConfig(path=MODEL, providers=["tensorrt", "cuda", "cpu"]))
    assert detector.providers[-1] == "CPUExecutionProvider"  # this machine has no GPU


# --- YOLOv8-style exports: small real ONNX graphs with the layouts operators actually have -------------

SIZE, NUM_CLASSES, ANCHORS = 64, 80, 3
# Candidates in letterboxed input pixels: (cx, cy, w, h, class). The score of the first candidate is
# the mean of the input's RED channel, so the test also checks BGR->RGB and the /255 scaling.
CANDIDATES = [(32, 32, 20, 20, 0), (10, 10, 8, 8, 2), (50, 50, 6, 6, 7)]
FIXED_SCORES = [None, 0.9, 0.1]


def _red_mean_node(nodes: list, inits: list) -> str:
    inits += [numpy_helper.from_array(np.array([0], np.int64), "s0"),
              numpy_helper.from_array(np.array([1], np.int64), "s1"),
              numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes.append(helper.make_node("Slice", ["images", "s0", "s1", "ax"], ["red"]))
    nodes.append(helper.make_node("ReduceMean", ["red"], ["red_mean"], keepdims=0))  # scalar
    return "red_mean"


def yolov8_graph(path: Path, layout: str) -> Path:
    nodes: list = []
    inits: list = []
    red = _red_mean_node(nodes, inits)
    if layout == "nms":
        base = np.zeros((1, 5, 6), np.float32)
        mask = np.zeros_like(base)
        for k, ((cx, cy, w, h, cls), fixed) in enumerate(zip(CANDIDATES, FIXED_SCORES, strict=True)):
            base[0, k, :4] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            base[0, k, 5] = cls
            if fixed is None:
                mask[0, k, 4] = 1.0
            else:
                base[0, k, 4] = fixed
        out_shape = [1, 5, 6]
    else:
        base = np.zeros((1, 4 + NUM_CLASSES, ANCHORS), np.float32)
        mask = np.zeros_like(base)
        for k, ((cx, cy, w, h, cls), fixed) in enumerate(zip(CANDIDATES, FIXED_SCORES, strict=True)):
            base[0, :4, k] = [cx, cy, w, h]
            if fixed is None:
                mask[0, 4 + cls, k] = 1.0
            else:
                base[0, 4 + cls, k] = fixed
        out_shape = [1, 4 + NUM_CLASSES, ANCHORS]
    inits += [numpy_helper.from_array(base, "base"), numpy_helper.from_array(mask, "mask")]
    nodes.append(helper.make_node("Mul", ["mask", red], ["scored_mask"]))
    nodes.append(helper.make_node("Add", ["base", "scored_mask"], ["pred"]))
    final = "pred"
    if layout == "channels_last":
        nodes.append(helper.make_node("Transpose", ["pred"], ["pred_t"], perm=[0, 2, 1]))
        final = "pred_t"
        out_shape = [1, ANCHORS, 4 + NUM_CLASSES]
    nodes.append(helper.make_node("Identity", [final], ["output0"]))
    graph = helper.make_graph(
        nodes, "yolov8_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "nms"])
def test_yolov8_layouts_decode_real_graph_output(tmp_path: Path, layout: str) -> None:
    model_path = yolov8_graph(tmp_path / f"{layout}.onnx", layout)
    detector = Detector(ModelConfig(path=model_path, kind="yolov8", score_threshold=0.25))
    assert isinstance(detector.adapter, Yolov8Adapter) and detector.adapter.layout == layout
    # A 128x64 frame: letterboxed to 64x32, centred with 16 px of padding above and below.
    frame = np.zeros((64, 128, 3), np.uint8)
    frame[..., 2] = 255  # pure red in BGR: the red-mean candidate scores 1.0 if RGB order and /255 hold
    canvas, geometry = letterbox(frame, detector.spec)
    assert (geometry.scale, geometry.pad_y) == (0.5, 16)
    found = detector.detect([canvas], [geometry])[0]
    order = np.argsort(found.class_id)
    assert list(found.class_id[order]) == [0, 2]  # the 0.1 candidate is under the threshold
    # Half the canvas is red 255, half is padding 114: mean red (255 + 114) / 2 / 255 = 0.72.
    assert found.confidence[order][0] == pytest.approx((255 + 114) / 2 / 255, abs=1e-3)
    # Back to frame pixels: minus the 16 px top padding, divided by the 0.5 scale.
    np.testing.assert_allclose(found.xyxy[order][0], [(32 - 10) * 2, (32 - 10 - 16) * 2,
                                                      (32 + 10) * 2, (32 + 10 - 16) * 2], atol=1e-3)
    blue = np.zeros_like(frame)
    blue[..., 0] = 255
    canvas, geometry = letterbox(blue, detector.spec)
    # Red mean is now 114 / 2 / 255 = 0.22 < 0.25: only the fixed 0.9 candidate is left.
    assert list(detector.detect([canvas], [geometry])[0].class_id) == [2]


def test_yolov8_unknown_layout_is_refused(tmp_path: Path) -> None:
    path = yolov8_graph(tmp_path / "bad.onnx", "channels_first")
    labels = tmp_path / "labels.txt"
    labels.write_text("person\ncar\n")  # 2 labels: [1, 84, 3] matches no layout
    with pytest.raises(ModelError, match="neither"):
        Detector(ModelConfig(path=path, kind="yolov8", labels=labels, class_groups={"person": ["person"]}))


def test_class_agnostic_nms_inside_a_group() -> None:
    groups = nms_groups(list(COCO80), {"person": ["person"], "vehicle": ["car", "truck", "bus"]})
    assert groups[COCO80.index("car")] == groups[COCO80.index("truck")] != groups[0]
    rows = np.zeros((2, 84), np.float32)
    rows[:, :4] = [[100, 100, 80, 60], [102, 101, 82, 60]]  # the same van, scored car and truck
    rows[0, 4 + COCO80.index("car")] = 0.8
    rows[1, 4 + COCO80.index("truck")] = 0.7
    geometry = letterbox(np.zeros((640, 640, 3), np.uint8), Yolov8Adapter(640, "channels_last").spec)[1]
    grouped = Yolov8Adapter(640, "channels_last", nms_groups=groups).decode({"o": rows[None]}, 0, geometry)
    per_class = Yolov8Adapter(640, "channels_last").decode({"o": rows[None]}, 0, geometry)
    assert len(grouped) == 1 and grouped.class_id[0] == COCO80.index("car")
    assert len(per_class) == 2
    assert len(nms(per_class.xyxy, per_class.confidence, 0.45)) == 1


def test_class_group_with_unknown_label_is_a_config_error(tmp_path: Path) -> None:
    data = {"model": {"path": str(MODEL), "class_groups": {"vehicle": ["car", "skip"]}},
            "sites": []}
    with pytest.raises(ConfigError, match=r"model: .*skip"):
        parse_config(data, tmp_path)


def test_model_prepare_command_and_batched_detection(tmp_path: Path) -> None:
    import subprocess

    from .conftest import FLUX_SECU

    out = tmp_path / "yolox_dynamic.onnx"
    result = subprocess.run([str(FLUX_SECU), "model", "prepare", str(MODEL), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3 Reshape target(s) rewritten" in result.stdout
    fixed = Detector(ModelConfig(path=MODEL))
    dynamic = Detector(ModelConfig(path=out))
    assert fixed.max_batch == 1 and dynamic.max_batch is None
    images = [cv2.imread(str(ASSETS / "images" / n)) for n in ("bus.jpg", "zidane.jpg", "astronaut.png")]
    boxed = [letterbox(i, fixed.spec) for i in images]
    together = dynamic.detect([c for c, _ in boxed], [g for _, g in boxed])  # one session run
    for (canvas, geometry), batched in zip(boxed, together, strict=True):
        (single,) = fixed.detect([canvas], [geometry])
        np.testing.assert_allclose(batched.xyxy, single.xyxy, atol=1e-3)
        np.testing.assert_array_equal(batched.class_id, single.class_id)
    refused = subprocess.run([str(FLUX_SECU), "model", "prepare", str(LABELS), str(tmp_path / "x.onnx")],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "cannot read" in refused.stderr
    assert not (tmp_path / "x.onnx").exists()
