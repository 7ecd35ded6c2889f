"""Label maps and class groups.

A group (``person``; ``vehicle`` = bicycle, car, motorcycle, bus, truck) is what the rules reason
about, and the unit of class-agnostic NMS: a van scored both "car" and "truck" is one vehicle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

# COCO-80 class names in output order (the shipped models), used when no label file is given.
COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)


def load_labels(path: Path | None) -> list[str]:
    """Class names, one per line, in output order; COCO-80 when no file is given."""
    if path is None:
        return list(COCO80)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def unknown_group_labels(labels: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Group members that are not model labels (a config error)."""
    known = set(labels)
    return [name for members in groups.values() for name in members if name not in known]


def nms_groups(labels: Sequence[str], groups: Mapping[str, Sequence[str]]) -> npt.NDArray[np.int32]:
    """Class id -> NMS group id: one id per configured group, then one per ungrouped class."""
    group_ids = {}
    for gid, members in enumerate(groups.values()):
        for name in members:
            group_ids[name] = gid
    out = np.empty(len(labels), np.int32)
    next_id = len(groups)
    for cid, name in enumerate(labels):
        if name in group_ids:
            out[cid] = group_ids[name]
        else:
            out[cid] = next_id
            next_id += 1
    return out


def class_ids(labels: Sequence[str], members: Sequence[str]) -> list[int]:
    return [labels.index(name) for name in members if name in labels]
