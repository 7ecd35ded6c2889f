"""Letterboxing: resize keeping the aspect ratio and paste on a canvas of the model's size.

The canvas is square (``size`` x ``size``), or, for a model that accepts any multiple of its stride
(``LetterboxSpec.stride``), trimmed to the resized frame: a 16:9 camera fills 416x234 of a 416 model's
input, and a 416x256 canvas costs the detector a third less than 416x416 of which 182 rows are padding.

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
    stride: int = 0
    """0: a square ``size`` canvas. Else the canvas is the resized frame rounded up to a multiple of
    ``stride`` on each side (at most ``size``); top-left layouts only (``centred`` False)."""


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where the original frame sits in the letterboxed canvas, to map boxes back."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int
    canvas_width: int = 0
    """The canvas the frame was pasted on (0: the model's square size)."""
    canvas_height: int = 0


def letterbox(
    frame: npt.NDArray[np.uint8], spec: LetterboxSpec
) -> tuple[npt.NDArray[np.uint8], Letterbox]:
    """Return a uint8 BGR canvas (``size x size x 3``, or trimmed: ``LetterboxSpec.stride``) and the
    geometry to undo it.

    A single-channel (IR) frame is replicated to three channels.
    """
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = frame.shape[:2]
    r = min(spec.size / h, spec.size / w)
    new_w, new_h = int(w * r), int(h * r)
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas_w, canvas_h = spec.size, spec.size
    if spec.stride and not spec.centred:
        canvas_w = min(spec.size, -(-new_w // spec.stride) * spec.stride)
        canvas_h = min(spec.size, -(-new_h // spec.stride) * spec.stride)
    canvas = np.full((canvas_h, canvas_w, 3), spec.pad_value, dtype=np.uint8)
    pad_x = (canvas_w - new_w) // 2 if spec.centred else 0
    pad_y = (canvas_h - new_h) // 2 if spec.centred else 0
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(scale=r, pad_x=pad_x, pad_y=pad_y, width=w, height=h,
                             canvas_width=canvas_w, canvas_height=canvas_h)


def unletterbox(xyxy: npt.NDArray[np.float32], geometry: Letterbox) -> npt.NDArray[np.float32]:
    """Map boxes from canvas pixels back to original-frame pixels, clipped to the frame."""
    out = xyxy.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - geometry.pad_x) / geometry.scale
    out[:, [1, 3]] = (out[:, [1, 3]] - geometry.pad_y) / geometry.scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, geometry.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, geometry.height)
    return out
