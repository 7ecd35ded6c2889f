"""The value that leaves the inference pool: boxes, scores and class ids of one frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections of one frame, in the pixel coordinates of the original (full-size) frame.

    Modelled on supervision's ``Detections``: parallel arrays, cheap to slice and to pickle.
    """

    xyxy: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    confidence: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    class_id: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(
                f"inconsistent shapes: xyxy {self.xyxy.shape}, confidence {self.confidence.shape}, "
                f"class_id {self.class_id.shape}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls()

    def select(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Detections:
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask])

    def of_class(self, class_id: int, min_score: float = 0.0) -> Detections:
        return self.select((self.class_id == class_id) & (self.confidence >= min_score))

    def to_list(self, labels: list[str] | None = None) -> list[dict[str, object]]:
        """Plain JSON-ready rows, for logs, the store and the CLI."""
        rows: list[dict[str, object]] = []
        for box, score, cls in zip(self.xyxy, self.confidence, self.class_id, strict=True):
            rows.append(
                {
                    "label": labels[int(cls)] if labels and 0 <= cls < len(labels) else int(cls),
                    "score": round(float(score), 3),
                    "box": [round(float(v), 1) for v in box],
                }
            )
        return rows
