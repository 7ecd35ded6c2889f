"""An ONNX detector: one onnxruntime session plus the adapter that reads its output.

Pure of Ray: the inference actor is a thin shell around :class:`Detector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from flux_secu.config import ModelConfig
from flux_secu.detect import yolox
from flux_secu.detect.detections import Detections
from flux_secu.detect.letterbox import Letterbox, LetterboxSpec


class ModelError(Exception):
    """The model file cannot be used as configured."""


def load_labels(path: Path | None) -> list[str]:
    """Class names, one per line, in output order; COCO-80 when no file is given."""
    if path is None:
        return list(COCO80)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def letterbox_spec(config: ModelConfig) -> LetterboxSpec:
    if config.kind == "yolox":
        return yolox.letterbox_spec(config.input_size)
    raise ModelError(f"unsupported model kind {config.kind!r}")


def _import_onnxruntime():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(
            "onnxruntime is not installed: install flux-secu[cpu] or flux-secu[gpu]"
        ) from None
    return ort


class Detector:
    """Runs the model on letterboxed canvases and returns :class:`Detections` per frame."""

    def __init__(self, config: ModelConfig) -> None:
        ort = _import_onnxruntime()
        self.config = config
        self.labels = load_labels(config.labels)
        options = ort.SessionOptions()
        # Measured on 2 cores: 1 intra-op thread is fastest; parallelism comes from several actors.
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(config.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load {config.path}: {exc}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        if len(shape) != 4 or shape[2] != config.input_size or shape[3] != config.input_size:
            raise ModelError(
                f"model input {model_input.name} has shape {shape}, "
                f"config says input_size {config.input_size}"
            )
        # A fixed-batch export takes one frame per run; a symbolic batch takes the whole batch.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.providers = self.session.get_providers()

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Raw model output for a preprocessed batch."""
        if self.fixed_batch == 1 and len(batch) > 1:
            return np.concatenate([self.run(batch[i : i + 1]) for i in range(len(batch))])
        (output,) = self.session.run(None, {self.input_name: batch})[:1]
        return np.asarray(output, dtype=np.float32)

    def detect(
        self, canvases: Sequence[npt.NDArray[np.uint8]], geometries: Sequence[Letterbox]
    ) -> list[Detections]:
        if not canvases:
            return []
        output = self.run(yolox.preprocess(list(canvases)))
        return [
            yolox.decode(
                output[i], geometries[i], self.config.input_size,
                self.config.score_threshold, self.config.nms_iou,
            )
            for i in range(len(canvases))
        ]


# COCO-80 class names in output order (the shipped models), used when no label file is given.
COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
