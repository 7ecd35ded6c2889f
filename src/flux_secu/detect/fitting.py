"""Let a detector exported for a square input take a canvas trimmed to the frame (``fit_canvas``).

A 16:9 camera letterboxed for a 416x416 model fills 416x234 of it; the other 182 rows are padding that
the detector convolves like the rest. A fully convolutional graph whose only size-dependent operators
take their sizes from the tensors (``Reshape`` to ``[1, 85, -1]``, ``Resize`` by scales, ``Slice`` to the
end: YOLOX as exported) answers the same for any height and width that are multiples of its largest
stride, and 416x256 costs a third less than 416x416 (measured: 16.8 ms against 25.0 ms a frame here).

The export says 416x416 on its input, so onnxruntime would refuse any other size: the input's height
and width are made symbolic in memory (the file is never changed) and the result is proven before use,
as ``prepare.py`` does for the batch: the same answers as the original on a square input, and the rows
a trimmed input must give. Any doubt keeps the square session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

SQUARE_ATOL = 1e-4


def fitted_model(path: Path) -> bytes | None:
    """The model with a symbolic input height and width (and output rows), serialised; None when its
    input is not [B, 3, H, W]."""
    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        return None
    for dim, name in ((dims[2], "height"), (dims[3], "width")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    for output in proto.graph.output:  # the rows depend on the size: let onnxruntime work them out
        for i, dim in enumerate(output.type.tensor_type.shape.dim[1:], start=1):
            dim.ClearField("dim_value")
            dim.dim_param = f"{output.name}_{i}"
    del proto.graph.value_info[:]  # shapes inferred for the exported size
    return proto.SerializeToString()


def proven(original: Any, fitted: Any, size: int, stride: int, rows: Callable[[int, int], int]) -> bool:
    """Whether ``fitted`` (an onnxruntime session) answers exactly as ``original`` on a square input and
    gives ``rows(height, width)`` rows on a trimmed one (the first output's axis 1)."""
    name = original.get_inputs()[0].name
    square = np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32)
    try:
        expected = original.run(None, {name: square})
        got = fitted.run(None, {name: square})
        height = max(stride, size // 2 // stride * stride)
        trimmed = fitted.run(None, {name: np.ascontiguousarray(square[:, :, :height])})
    except Exception:  # onnxruntime raises its own types: any failure means "keep the square"
        return False
    same = all(np.allclose(e, g, atol=SQUARE_ATOL) for e, g in zip(expected, got, strict=True))
    return same and trimmed[0].ndim >= 2 and trimmed[0].shape[1] == rows(height, size)
