"""Privacy masks: regions (public road, neighbours) made unrecognisable in every stored image.

The CNIL allows filming only the site itself. A mask is applied before an image is encoded for
storage, so no stored snapshot, clip or live view ever holds those pixels. Masked pixels are
pixelated to blocks of ``BLOCK`` pixels, their edges smoothed: faces, number plates and text are
gone, while the operator still sees that the region exists (a flat grey box would look like a fault).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

Polygon = Sequence[tuple[float, float]]

BLOCK = 24
"""Pixel block size of the pixelation, in pixels of the stored image."""


class PrivacyMask:
    """Normalised polygons, rasterised once per image size."""

    def __init__(self, polygons: Sequence[Polygon]) -> None:
        self.polygons = [np.asarray(p, np.float32) for p in polygons]
        self._size: tuple[int, int] | None = None
        self._mask: npt.NDArray[np.uint8] | None = None
        self._rect = (0, 0, 0, 0)

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def mask_for(self, width: int, height: int) -> tuple[npt.NDArray[np.uint8], tuple[int, int, int, int]]:
        """The 0/1 raster of the masks and its bounding rectangle (x, y, w, h) for this image size."""
        if self._size != (width, height) or self._mask is None:
            raster = np.zeros((height, width), np.uint8)
            scale = np.array([width, height], np.float32)
            for polygon in self.polygons:
                cv2.fillPoly(raster, [np.round(polygon * scale).astype(np.int32)], 1)
            self._mask, self._rect, self._size = raster, cv2.boundingRect(raster), (width, height)
        return self._mask, self._rect

    def apply(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """A copy of ``image`` with the masked regions pixelated and blurred (``image`` is kept)."""
        if not self.polygons:
            return image
        height, width = image.shape[:2]
        mask, (x, y, w, h) = self.mask_for(width, height)
        out = image.copy()
        if w == 0 or h == 0:
            return out
        # Only the masks' bounding rectangle is worked on: ~10x cheaper than the whole frame.
        roi = image[y: y + h, x: x + w]
        blocks = (max(1, w // BLOCK), max(1, h // BLOCK))
        small = cv2.resize(roi, blocks, interpolation=cv2.INTER_AREA)
        # Upscaling the blocks bilinearly blurs their edges: nothing of the original detail is left.
        coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        cv2.copyTo(coarse, mask[y: y + h, x: x + w], out[y: y + h, x: x + w])
        return out
