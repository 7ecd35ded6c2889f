"""`flux-secu model prepare`: fixed-batch exports made batch-dynamic, checked against single runs."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from flux_secu.detect.letterbox import LetterboxSpec, letterbox
from flux_secu.detect.prepare import (
    PrepareError,
    make_batch_dynamic,
    prepare_model,
    rewrite_batch,
    verify_batch,
)

from .conftest import ASSETS

MODELS = ASSETS / "models"
IMAGES = sorted((ASSETS / "images").glob("*.*"))
NANODET_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
NANODET_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)


def real_frames(kind: str, count: int) -> npt.NDArray[np.float32]:
    """``count`` distinct preprocessed frames per the assets README: the shipped photos, then mirrored."""
    if kind == "yolox":
        spec = LetterboxSpec(size=416, pad_value=114, centred=False)
    else:
        spec = LetterboxSpec(size=320, pad_value=0, centred=True)
    photos = [cv2.imread(str(p)) for p in IMAGES]
    photos += [cv2.flip(p, 1) for p in photos]
    canvases = [letterbox(photos[i % len(photos)], spec)[0] for i in range(count)]
    batch = np.stack(canvases).astype(np.float32)  # BGR, NHWC
    if kind == "nanodet":
        batch = (batch - NANODET_MEAN) / NANODET_STD
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def batch_dim(path: Path) -> list[int | str]:
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


# --- the shipped models --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "filename", "reshapes"),
    [("yolox", "yolox_nano.onnx", 3), ("nanodet", "nanodet_m_320.onnx", 38)],
)
def test_shipped_models_become_batch_dynamic(tmp_path: Path, kind: str, filename: str, reshapes: int) -> None:
    source, out = MODELS / filename, tmp_path / filename
    report = prepare_model(source, out)

    assert report.rewritten_reshapes == reshapes
    assert not report.already_dynamic
    assert report.max_abs_diff <= 1e-4
    assert batch_dim(out)[0] == "batch"
    assert sorted(p.name for p in tmp_path.iterdir()) == [filename]  # no partial file left

    # Real photos, preprocessed as the detector does: one batch of 4 == 4 single runs.
    assert verify_batch(source, out, inputs=real_frames(kind, 4)) <= 1e-4
    # Any batch size works, including 1 and one larger than the verification's.
    assert verify_batch(source, out, inputs=real_frames(kind, 1)) <= 1e-4
    assert verify_batch(source, out, inputs=real_frames(kind, 7)) <= 1e-4


@pytest.mark.parametrize("filename", ["yolox_nano.onnx", "nanodet_m_320.onnx"])
def test_marking_the_batch_symbolic_is_not_enough(filename: str) -> None:
    """The trap described in the assets README: the verification must catch it, for both failure modes."""
    naive = onnx.load(str(MODELS / filename))
    initialised = {t.name for t in naive.graph.initializer}
    for value in [*(v for v in naive.graph.input if v.name not in initialised), *naive.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del naive.graph.value_info[:]

    # YOLOX silently folds the 4 frames into the anchors; NanoDet's channel shuffle fails outright.
    expected = "has shape .* expected" if filename.startswith("yolox") else "fails on a batch of 4"
    with pytest.raises(PrepareError, match=expected):
        verify_batch(MODELS / filename, naive)


def test_already_dynamic_model_is_verified_and_copied(tmp_path: Path) -> None:
    first = tmp_path / "dynamic.onnx"
    prepare_model(MODELS / "yolox_nano.onnx", first)
    report = prepare_model(first, tmp_path / "again.onnx")
    assert report.already_dynamic
    assert report.rewritten_reshapes == 0
    assert (tmp_path / "again.onnx").read_bytes() == first.read_bytes()


# --- small graphs built here ---------------------------------------------------------------------------


def tiny_model(nodes: list[onnx.NodeProto], out_shape: list[int], *, in_shape: list[int] | None = None,
               initializers: list[onnx.TensorProto] | None = None) -> onnx.ModelProto:
    """A one-input, one-output opset-11 graph on an input ``x`` of [1, 4, 6, 6] by default."""
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape or [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=initializers or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def channel_shuffle() -> onnx.ModelProto:
    """NanoDet's pattern in miniature: Reshape [1, g, c/g, h, w] -> Transpose -> Reshape [1, c, h, w]."""
    return tiny_model(
        [
            helper.make_node("Reshape", ["x", "split"], ["groups"], name="to_groups"),
            helper.make_node("Transpose", ["groups"], ["swapped"], perm=[0, 2, 1, 3, 4]),
            # The second target is a Constant node rather than an initializer: both forms are handled.
            helper.make_node("Constant", [], ["merge"], value=ints("merge_value", [1, -1, 6, 6])),
            helper.make_node("Reshape", ["swapped", "merge"], ["y"], name="to_channels"),
        ],
        [1, 4, 6, 6],
        initializers=[ints("split", [1, 2, 2, 6, 6])],
    )


def test_channel_shuffle_targets_take_the_batch_from_the_input(tmp_path: Path) -> None:
    model = channel_shuffle()
    result = rewrite_batch(model)
    assert result.rewritten_reshapes == 2

    rewritten = result.model
    targets = {t.name: numpy_helper.to_array(t).tolist() for t in rewritten.graph.initializer}
    reshapes = [n for n in rewritten.graph.node if n.op_type == "Reshape"]
    assert [targets[n.input[1]] for n in reshapes] == [[0, 2, 2, 6, 6], [0, -1, 6, 6]]
    # The replaced targets are gone, and the original model is left untouched.
    assert "split" not in targets
    assert not any(n.op_type == "Constant" for n in rewritten.graph.node)
    assert numpy_helper.to_array(model.graph.initializer[0]).tolist() == [1, 2, 2, 6, 6]
    assert verify_batch(model, rewritten, batch=5) == 0.0

    source = tmp_path / "shuffle.onnx"
    onnx.save(model, str(source))
    assert prepare_model(source, tmp_path / "out.onnx").rewritten_reshapes == 2


def test_leading_minus_one_already_follows_the_batch() -> None:
    model = tiny_model(
        [helper.make_node("Reshape", ["x", "flat"], ["y"])], [1, 144], initializers=[ints("flat", [-1, 144])]
    )
    result = rewrite_batch(model)
    assert result.rewritten_reshapes == 0
    assert verify_batch(model, make_batch_dynamic(model), batch=3) == 0.0


UNCONVERTIBLE = {
    # The frames would be merged with the channels: [1, 4, 6, 6] -> [4, 36] has no batch axis left.
    "reshape folds batch": (
        [helper.make_node("Reshape", ["x", "t"], ["y"], name="fold")],
        [4, 36],
        [ints("t", [4, -1])],
        "Reshape node 'fold' folds the batch axis into other dimensions",
    ),
    # Flatten(axis=0) gives [1, N*144]: every frame in one row.
    "flatten axis 0": (
        [helper.make_node("Flatten", ["x"], ["y"], name="flat", axis=0)],
        [1, 144],
        [],
        "Flatten node 'flat' (axis=0) folds the batch axis",
    ),
    # The target is computed from the input's shape at run time: we cannot prove what it does.
    "computed target": (
        [
            helper.make_node("Shape", ["x"], ["shape"], name="shape_of_x"),
            helper.make_node("Reshape", ["x", "shape"], ["y"]),
        ],
        [1, 4, 6, 6],
        [],
        "Shape node 'shape_of_x' reads the size of a batched tensor",
    ),
    # A target assembled by nodes (here from constants, with the batch of 1 baked in): not provable.
    "target assembled by nodes": (
        [
            helper.make_node("Concat", ["lead", "rest"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"], name="assembled"),
        ],
        [1, 144],
        [ints("lead", [1]), ints("rest", [144])],
        "Reshape node 'assembled' has a computed target shape that depends on batch 1",
    ),
    # A constant frozen at batch 1 joined to the frames along the channels.
    "concat with batch-1 constant": (
        [helper.make_node("Concat", ["x", "extra"], ["y"], name="join", axis=1)],
        [1, 5, 6, 6],
        [numpy_helper.from_array(np.zeros((1, 1, 6, 6), np.float32), "extra")],
        "Concat node 'join' joins a batched tensor with a fixed batch-1 tensor",
    ),
}


@pytest.mark.parametrize("case", list(UNCONVERTIBLE))
def test_unconvertible_graph_is_refused_without_output(tmp_path: Path, case: str) -> None:
    nodes, out_shape, initializers, message = UNCONVERTIBLE[case]
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(tiny_model(nodes, out_shape, initializers=initializers), str(source))

    with pytest.raises(PrepareError, match=re.escape(message)) as caught:
        prepare_model(source, out)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_verification_failure_removes_the_partial_output(tmp_path: Path) -> None:
    """A graph the analysis accepts but whose outputs differ run to run: only measuring catches it."""
    model = tiny_model(
        [
            helper.make_node("RandomNormal", [], ["noise"], shape=[1, 4, 6, 6]),
            helper.make_node("Add", ["x", "noise"], ["y"]),
        ],
        [1, 4, 6, 6],
    )
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(source))
    with pytest.raises(PrepareError, match=r"batch of 4 differs from 4 single runs by .* \(> 0.0001\)"):
        prepare_model(source, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_input_without_a_batch_axis_of_one_is_refused(tmp_path: Path) -> None:
    model = tiny_model([helper.make_node("Relu", ["x"], ["y"])], [1, 10], in_shape=[1, 10])
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    expected = "input 'x' has shape [1, 10]: expected an image batch [1, C, H, W]"
    with pytest.raises(PrepareError, match=re.escape(expected)):
        prepare_model(source, tmp_path / "out.onnx")


def test_non_onnx_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "notes.onnx"
    source.write_text("this is not a model\n")
    with pytest.raises(PrepareError, match=r"cannot read .*notes\.onnx as an ONNX model: "):
        prepare_model(source, tmp_path / "out.onnx")
    with pytest.raises(PrepareError, match=r"cannot read .*missing\.onnx as an ONNX model: "):
        prepare_model(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.onnx"]
