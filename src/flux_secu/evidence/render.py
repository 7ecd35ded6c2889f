"""Drawing what the detector saw onto an evidence snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

BOX_COLOUR = (0, 0, 255)  # BGR red: what an operator reads as "this is the alert"


def draw_boxes(
    image: npt.NDArray[np.uint8], boxes: Sequence[dict[str, Any]], source_size: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with each detection's box and label.

    ``boxes`` are rows of ``Detections.to_list`` (``box`` in source pixels, ``label``, ``score``);
    ``source_size`` is the (width, height) they refer to, since the stored image may be smaller.
    """
    out = image.copy()
    height, width = out.shape[:2]
    sx, sy = width / source_size[0], height / source_size[1]
    thickness = max(1, round(width / 320))
    for row in boxes:
        x1, y1, x2, y2 = row["box"]
        p1 = (round(x1 * sx), round(y1 * sy))
        p2 = (round(x2 * sx), round(y2 * sy))
        cv2.rectangle(out, p1, p2, BOX_COLOUR, thickness)
        caption = f"{row.get('label', '')} {float(row.get('score', 0.0)):.2f}".strip()
        cv2.putText(out, caption, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, BOX_COLOUR, thickness, cv2.LINE_AA)
    return out
