"""NanoDet (legacy v0.x export) adapter, as documented in the shared assets README.

Input: float32 [B,3,S,S], BGR, letterboxed CENTRED on a canvas of 0, then ``(x - mean) / std``.
Outputs by name: ``cls_pred_stride_{8,16,32}`` [B,(S/s)^2,C] (sigmoided) and
``dis_pred_stride_{8,16,32}`` [B,(S/s)^2,4*8]: per side, logits over 8 distance bins.
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
BINS = 8
MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)
DEFAULT_SCORE, DEFAULT_IOU = 0.35, 0.6


@lru_cache(maxsize=8)
def _centres(size: int, stride: int) -> npt.NDArray[np.float32]:
    n = size // stride
    ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    offset = (stride - 1) / 2
    return np.stack([xs.ravel() * stride + offset, ys.ravel() * stride + offset], axis=1).astype(np.float32)


def _distances(logits: npt.NDArray[np.float32], stride: int) -> npt.NDArray[np.float32]:
    """[N, 4*BINS] logits -> [N, 4] expected distances (left, top, right, bottom) in pixels."""
    bins = logits.reshape(-1, 4, BINS)
    bins = np.exp(bins - bins.max(axis=2, keepdims=True))
    bins /= bins.sum(axis=2, keepdims=True)
    expectation = (bins * np.arange(BINS, dtype=np.float32)).sum(axis=2)
    return (expectation * stride).astype(np.float32)


@dataclass(frozen=True)
class NanodetAdapter:
    size: int
    score_threshold: float = DEFAULT_SCORE
    nms_iou: float = DEFAULT_IOU
    nms_groups: npt.NDArray[np.int32] | None = None

    @property
    def spec(self) -> LetterboxSpec:
        return LetterboxSpec(size=self.size, pad_value=0, centred=True)

    def preprocess(self, canvases: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        batch = (np.stack(canvases).astype(np.float32) - MEAN) / STD
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def decode(
        self, outputs: dict[str, npt.NDArray[np.float32]], index: int, geometry: Letterbox
    ) -> Detections:
        boxes, scores, classes = [], [], []
        for stride in STRIDES:
            try:
                cls = outputs[f"cls_pred_stride_{stride}"][index]
                dis = outputs[f"dis_pred_stride_{stride}"][index]
            except KeyError as exc:
                raise ValueError(f"NanoDet output {exc.args[0]} missing (outputs: {list(outputs)})") from None
            class_id = cls.argmax(axis=1)
            score = cls[np.arange(len(class_id)), class_id]
            keep = score >= self.score_threshold
            if not keep.any():
                continue
            centres = _centres(self.size, stride)[keep]
            dist = _distances(dis[keep], stride)
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            scores.append(score[keep])
            classes.append(class_id[keep])
        if not boxes:
            return Detections.empty()
        return finish(
            np.concatenate(boxes).astype(np.float32), np.concatenate(scores), np.concatenate(classes),
            geometry, self.nms_iou, self.nms_groups,
        )
