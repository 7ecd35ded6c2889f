"""Real ONNX detectors that are slow on purpose, sized to this machine's speed.

A chain of matrix products stands for a heavy model. How long it takes depends on the machine (a
faster VM once ran the fixed-size chain fast enough that a test meant to overload it saw no drop),
so the chain's length is calibrated here: a test asks for seconds per frame, not for a count.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 384  # each link of the chain: one SIDE x SIDE matrix product


def slow_yolov8(path: Path, matmuls: int) -> Path:
    """A YOLOv8-shaped detector (fixed batch of 1, 64x64 input) that finds nothing, after ``matmuls``
    matrix products."""
    nodes, inits = [], [numpy_helper.from_array(np.eye(SIDE, dtype=np.float32) * 0.5, "w")]
    nodes.append(helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0))
    inits.append(numpy_helper.from_array(np.ones((SIDE, SIDE), np.float32), "ones"))
    nodes.append(helper.make_node("Mul", ["ones", "m"], ["x0"]))
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"x{i}", "w"], [f"x{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", [f"x{matmuls}"], ["s"], keepdims=0))
    inits.append(numpy_helper.from_array(np.zeros((1, 84, 3), np.float32), "base"))
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    nodes.append(helper.make_node("Mul", ["s", "zero"], ["z"]))
    nodes.append(helper.make_node("Add", ["base", "z"], ["output0"]))
    graph = helper.make_graph(
        nodes, "slow", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, 3])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def seconds_per_frame(path: Path, runs: int = 5) -> float:
    """The model's median time per frame here, on one thread as the inference actor runs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": np.zeros((1, 3, 64, 64), np.float32)}
    session.run(None, feed)  # the first run allocates
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def calibrated_slow_yolov8(path: Path, seconds: float) -> tuple[Path, float]:
    """A slow detector that takes at least ``seconds`` per frame on this machine; returns the file and
    its measured time per frame."""
    probe = 20
    per_matmul = seconds_per_frame(slow_yolov8(path, probe)) / probe
    matmuls = max(1, math.ceil(1.2 * seconds / per_matmul))
    slow_yolov8(path, matmuls)
    return path, seconds_per_frame(path, runs=3)
