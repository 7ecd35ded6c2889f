"""Letterboxing: resize keeping the aspect ratio and paste on a square canvas of the model's size.

This runs inside the camera actor so that frames never travel full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class LetterboxSpec:
    """How a model wants its input laid out; chosen by the model adapter."""

    size: int
    pad_value: int = 114
    centred: bool = False


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where the original frame sits in the letterboxed canvas, to map boxes back."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int


def letterbox(
    frame: npt.NDArray[np.uint8], spec: LetterboxSpec
) -> tuple[npt.NDArray[np.uint8], Letterbox]:
    """Return a ``size x size x 3`` uint8 BGR canvas and the geometry to undo it.

    A single-channel (IR) frame is replicated to three channels.
    """
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = frame.shape[:2]
    r = min(spec.size / h, spec.size / w)
    new_w, new_h = int(w * r), int(h * r)
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((spec.size, spec.size, 3), spec.pad_value, dtype=np.uint8)
    pad_x = (spec.size - new_w) // 2 if spec.centred else 0
    pad_y = (spec.size - new_h) // 2 if spec.centred else 0
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(scale=r, pad_x=pad_x, pad_y=pad_y, width=w, height=h)


def unletterbox(xyxy: npt.NDArray[np.float32], geometry: Letterbox) -> npt.NDArray[np.float32]:
    """Map boxes from canvas pixels back to original-frame pixels, clipped to the frame."""
    out = xyxy.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - geometry.pad_x) / geometry.scale
    out[:, [1, 3]] = (out[:, [1, 3]] - geometry.pad_y) / geometry.scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, geometry.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, geometry.height)
    return out
