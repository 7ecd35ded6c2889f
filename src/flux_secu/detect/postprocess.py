"""The tail shared by every model adapter: back to frame pixels, then NMS within each group."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from flux_secu.detect.detections import Detections
from flux_secu.detect.letterbox import Letterbox, unletterbox
from flux_secu.detect.nms import batched_nms


def finish(
    xyxy: npt.NDArray[np.float32],
    score: npt.NDArray[np.floating],
    class_id: npt.NDArray[np.integer],
    geometry: Letterbox,
    nms_iou: float,
    nms_groups: npt.NDArray[np.int32] | None,
) -> Detections:
    """Shared tail of every adapter: back to frame pixels, then NMS per group."""
    xyxy = unletterbox(xyxy, geometry)
    score = score.astype(np.float32)
    class_id = class_id.astype(np.int32)
    groups = class_id if nms_groups is None else nms_groups[class_id]
    kept = batched_nms(xyxy, score, groups, nms_iou)
    return Detections(xyxy[kept], score[kept], class_id[kept])
