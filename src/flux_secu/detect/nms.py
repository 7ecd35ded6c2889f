"""Non-maximum suppression in numpy (a few dozen candidates per frame: no need for more)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def nms(
    xyxy: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou_threshold: float
) -> npt.NDArray[np.intp]:
    """Indices of the boxes kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        x1 = np.maximum(xyxy[best, 0], xyxy[rest, 0])
        y1 = np.maximum(xyxy[best, 1], xyxy[rest, 1])
        x2 = np.minimum(xyxy[best, 2], xyxy[rest, 2])
        y2 = np.minimum(xyxy[best, 3], xyxy[rest, 3])
        inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def batched_nms(
    xyxy: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    groups: npt.NDArray[np.int32],
    iou_threshold: float,
) -> npt.NDArray[np.intp]:
    """NMS within each group only (per class, or per class group for class-agnostic merging)."""
    if len(xyxy) == 0:
        return np.zeros(0, dtype=np.intp)
    # Shift each group to its own region of the plane so boxes of different groups never overlap.
    offset = groups.astype(np.float32)[:, None] * (float(xyxy.max()) + 1.0)
    keep = nms(xyxy + offset, scores, iou_threshold)
    return keep
