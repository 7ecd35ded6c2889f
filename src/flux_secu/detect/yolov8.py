"""YOLOv8 / YOLO11-style adapter (Ultralytics exports and look-alikes).

Input: float32 [B,3,S,S], RGB, 0-1, letterboxed centred on a canvas of 114.
Outputs, recognised by shape (C = number of labels):
- raw predictions ``[B, 4+C, N]`` (Ultralytics default) or ``[B, N, 4+C]``: rows ``cx, cy, w, h``
  then per-class scores (already sigmoided, no objectness);
- embedded NMS ``[B, K, 6]``: rows ``x1, y1, x2, y2, score, class`` (padding rows score 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from flux_secu.detect.detections import Detections
from flux_secu.detect.letterbox import Letterbox, LetterboxSpec, unletterbox
from flux_secu.detect.postprocess import finish

Layout = Literal["channels_first", "channels_last", "nms"]
DEFAULT_SCORE, DEFAULT_IOU = 0.25, 0.45


def detect_layout(shape: tuple[int | str | None, ...], num_classes: int) -> Layout:
    """Tell the output layout from its shape; raises ValueError when it is none of the known ones."""
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D output, got shape {shape}")
    _, a, b = shape
    if a == 4 + num_classes:
        return "channels_first"
    if b == 4 + num_classes:
        return "channels_last"
    if b == 6:
        return "nms"
    raise ValueError(
        f"output shape {shape} is neither [B, 4+C, N], [B, N, 4+C] nor [B, K, 6] with C={num_classes} labels"
    )


@dataclass(frozen=True)
class Yolov8Adapter:
    size: int
    layout: Layout
    score_threshold: float = DEFAULT_SCORE
    nms_iou: float = DEFAULT_IOU
    nms_groups: npt.NDArray[np.int32] | None = None

    @property
    def spec(self) -> LetterboxSpec:
        return LetterboxSpec(size=self.size, pad_value=114, centred=True)

    def preprocess(self, canvases: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        batch = np.stack(canvases)[..., ::-1].astype(np.float32) / 255.0  # BGR -> RGB, 0-1
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def decode(
        self, outputs: dict[str, npt.NDArray[np.float32]], index: int, geometry: Letterbox
    ) -> Detections:
        output = next(iter(outputs.values()))[index]
        if self.layout == "nms":
            rows = output[output[:, 4] >= self.score_threshold]
            xyxy = unletterbox(rows[:, :4].astype(np.float32), geometry)
            return Detections(xyxy, rows[:, 4].astype(np.float32), rows[:, 5].astype(np.int32))
        rows = output.T if self.layout == "channels_first" else output
        class_scores = rows[:, 4:]
        class_id = class_scores.argmax(axis=1)
        score = class_scores[np.arange(len(class_id)), class_id]
        keep = score >= self.score_threshold
        if not keep.any():
            return Detections.empty()
        cxcy, wh = rows[keep, 0:2], rows[keep, 2:4]
        xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1).astype(np.float32)
        return finish(xyxy, score[keep], class_id[keep], geometry, self.nms_iou, self.nms_groups)
