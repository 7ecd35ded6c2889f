"""Privacy masks: regions (public road, neighbours) made unrecognisable in every stored image.

The CNIL allows filming only the site itself. A mask is applied before an image is encoded for
storage, so no stored snapshot, clip or live view ever holds those pixels. Masked pixels are
pixelated to blocks of ``BLOCK`` source pixels and then blurred: faces, number plates and text are
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
        self._mask: npt.NDArray[np.bool_] | None = None

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def mask_for(self, width: int, height: int) -> npt.NDArray[np.bool_]:
        if self._size != (width, height) or self._mask is None:
            raster = np.zeros((height, width), np.uint8)
            scale = np.array([width, height], np.float32)
            for polygon in self.polygons:
                cv2.fillPoly(raster, [np.round(polygon * scale).astype(np.int32)], 1)
            self._mask, self._size = raster.astype(bool), (width, height)
        return self._mask

    def apply(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """A copy of ``image`` with the masked regions pixelated and blurred (``image`` is kept)."""
        if not self.polygons:
            return image
        height, width = image.shape[:2]
        mask = self.mask_for(width, height)
        blocks = (max(1, width // BLOCK), max(1, height // BLOCK))
        small = cv2.resize(image, blocks, interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
        coarse = cv2.blur(coarse, (BLOCK, BLOCK))
        out = image.copy()
        out[mask] = coarse[mask]
        return out
