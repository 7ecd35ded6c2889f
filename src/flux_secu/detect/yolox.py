"""YOLOX adapter: pre-processing and decoding of the raw grid output (see the shared assets README).

Input: float32 [B,3,H,W], BGR, 0-255, letterboxed top-left on a canvas of 114 (S x S as exported, or
trimmed to a multiple of 32 when the graph takes any size: ``Detector``'s ``fit_canvas``).
Output: [B, A, 5+C] with A anchors over strides 8, 16, 32 (row-major) and rows
``[tx, ty, tw, th, obj, p0..pC-1]``; obj and p are already sigmoided.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from flux_secu.detect.detections import Detections
from flux_secu.detect.letterbox import Letterbox, LetterboxSpec
from flux_secu.detect.postprocess import finish

STRIDES = (8, 16, 32)
DEFAULT_SCORE, DEFAULT_IOU = 0.3, 0.45


def anchors(height: int, width: int) -> int:
    """Rows the model outputs for a ``height`` x ``width`` input."""
    return sum((height // s) * (width // s) for s in STRIDES)


@lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    cells, strides = [], []
    for s in STRIDES:
        rows, cols = height // s, width // s
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((rows * cols, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode(
    output: npt.NDArray[np.float32],
    geometry: Letterbox,
    size: int,
    score_threshold: float,
    nms_iou: float,
    nms_groups: npt.NDArray[np.int32] | None = None,
) -> Detections:
    """Decode one image's rows ``[A, 5+C]`` into detections in original-frame pixels.

    ``nms_groups`` maps class id -> NMS group (class-agnostic NMS inside a group such as "vehicle");
    by default each class is its own group.
    """
    height, width = geometry.canvas_height or size, geometry.canvas_width or size
    grid, stride = _grid(height, width)
    if output.shape[0] != len(grid):
        raise ValueError(f"expected {len(grid)} anchors for input {width}x{height}, got {output.shape[0]}")
    class_scores = output[:, 5:] * output[:, 4:5]
    class_id = class_scores.argmax(axis=1)
    score = class_scores[np.arange(len(class_id)), class_id]
    keep = score >= score_threshold
    if not keep.any():
        return Detections.empty()
    rows, g, s = output[keep], grid[keep], stride[keep]
    cxcy = (rows[:, 0:2] + g) * s
    wh = np.exp(rows[:, 2:4]) * s
    xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1).astype(np.float32)
    return finish(xyxy, score[keep], class_id[keep], geometry, nms_iou, nms_groups)


@dataclass(frozen=True)
class YoloxAdapter:
    size: int
    score_threshold: float = DEFAULT_SCORE
    nms_iou: float = DEFAULT_IOU
    nms_groups: npt.NDArray[np.int32] | None = None
    fit_canvas: bool = False
    """The session takes canvases trimmed to the frame (multiples of 32, ``detect/fitting.py``)."""

    @property
    def spec(self) -> LetterboxSpec:
        stride = STRIDES[-1] if self.fit_canvas else 0
        return LetterboxSpec(size=self.size, pad_value=114, centred=False, stride=stride)

    def preprocess(self, canvases: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """HWC uint8 BGR canvases -> NCHW float32 (no normalisation: YOLOX takes 0-255)."""
        batch = np.stack(canvases).astype(np.float32)
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def decode(
        self, outputs: dict[str, npt.NDArray[np.float32]], index: int, geometry: Letterbox
    ) -> Detections:
        (output,) = outputs.values()
        return decode(output[index], geometry, self.size, self.score_threshold, self.nms_iou, self.nms_groups)
