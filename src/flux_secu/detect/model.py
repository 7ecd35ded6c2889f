"""An ONNX detector: one onnxruntime session plus the adapter that reads its output.

Pure of Ray: the inference actor is a thin shell around :class:`Detector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from flux_secu.config import ModelConfig
from flux_secu.detect.classes import load_labels, nms_groups
from flux_secu.detect.detections import Detections
from flux_secu.detect.fitting import fitted_model, proven
from flux_secu.detect.letterbox import Letterbox, LetterboxSpec
from flux_secu.detect.nanodet import NanodetAdapter
from flux_secu.detect.providers import ORT_NAMES, choose_providers
from flux_secu.detect.yolov8 import Yolov8Adapter, detect_layout
from flux_secu.detect.yolox import STRIDES, YoloxAdapter, anchors

__all__ = ["Detector", "ModelAdapter", "ModelError", "load_labels"]


class ModelError(Exception):
    """The model file cannot be used as configured."""


class ModelAdapter(Protocol):
    """What a model family needs: its input layout, its pre-processing and its output decoding."""

    @property
    def spec(self) -> LetterboxSpec: ...

    def preprocess(self, canvases: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]: ...

    def decode(
        self, outputs: dict[str, npt.NDArray[np.float32]], index: int, geometry: Letterbox
    ) -> Detections: ...


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("onnxruntime is not installed: install flux-secu[cpu] or flux-secu[gpu]") from None
    return ort


def make_adapter(
    config: ModelConfig, size: int, output_shapes: dict[str, tuple[Any, ...]], labels: list[str]
) -> ModelAdapter:
    groups = nms_groups(labels, config.class_groups)
    thresholds: dict[str, Any] = {"nms_groups": groups}
    if config.score_threshold is not None:
        thresholds["score_threshold"] = config.score_threshold
    if config.nms_iou is not None:
        thresholds["nms_iou"] = config.nms_iou
    if config.kind == "yolox":
        return YoloxAdapter(size, **thresholds)
    if config.kind == "nanodet":
        return NanodetAdapter(size, **thresholds)
    if config.kind == "yolov8":
        try:
            layout = detect_layout(next(iter(output_shapes.values())), len(labels))
        except ValueError as exc:
            raise ModelError(f"{config.path}: {exc}") from None
        return Yolov8Adapter(size, layout, **thresholds)
    raise ModelError(f"unsupported model kind {config.kind!r}")


class Detector:
    """Runs the model on letterboxed canvases and returns :class:`Detections` per frame."""

    def __init__(self, config: ModelConfig, *, io_binding: bool | None = None) -> None:
        ort = _import_onnxruntime()
        ort.set_default_logger_severity(3)  # old exporters trigger many harmless warnings
        self.config = config
        self.labels = load_labels(config.labels)
        options = ort.SessionOptions()
        # Measured on 2 cores: 1 intra-op thread is fastest; parallelism comes from several actors.
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = choose_providers(config.providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(config.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load {config.path}: {exc}") from None
        self.providers: list[str] = self.session.get_providers()
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        if len(shape) != 4 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise ModelError(f"model input {model_input.name} has shape {shape}; expected [B, 3, S, S]")
        if config.input_size is not None and config.input_size != shape[2]:
            raise ModelError(
                f"model input is {shape[2]}x{shape[3]}, config says input_size {config.input_size}"
            )
        self.size = int(shape[2])
        # A fixed-batch export takes one frame per run; a symbolic batch takes the whole batch at once.
        self.max_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        output_shapes = {o.name: tuple(o.shape) for o in self.session.get_outputs()}
        self.adapter = make_adapter(config, self.size, output_shapes, self.labels)
        self.fitted = False
        """The session takes canvases trimmed to the frame (``detect/fitting.py``)."""
        if config.fit_canvas and isinstance(self.adapter, YoloxAdapter):
            self._fit(ort, options, providers)
        # On a GPU, IO binding copies the batch to the device once and lets the provider keep
        # intermediate buffers there; on the CPU provider it only adds overhead.
        self.io_binding = (self.providers[0] != ORT_NAMES["cpu"]) if io_binding is None else io_binding

    def _fit(self, ort: Any, options: Any, providers: list[Any]) -> None:
        serialised = fitted_model(self.config.path)
        if serialised is None:
            return
        try:
            session = ort.InferenceSession(serialised, sess_options=options, providers=providers)
        except Exception:  # onnxruntime raises its own exception types: keep the square session
            return
        if proven(self.session, session, self.size, STRIDES[-1], anchors):
            self.session, self.fitted = session, True
            self.adapter = replace(self.adapter, fit_canvas=True)

    @property
    def spec(self) -> LetterboxSpec:
        return self.adapter.spec

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Raw model outputs by name for a preprocessed batch."""
        if self.max_batch is not None and len(batch) > self.max_batch:
            parts = [self.run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
            return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}
        if self.io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, batch)
            for name in self.output_names:
                binding.bind_output(name)
            self.session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        else:
            values = self.session.run(self.output_names, {self.input_name: batch})
        return {
            name: np.asarray(v, dtype=np.float32) for name, v in zip(self.output_names, values, strict=True)
        }

    def detect(
        self, canvases: Sequence[npt.NDArray[np.uint8]], geometries: Sequence[Letterbox]
    ) -> list[Detections]:
        results: list[Detections] = [Detections.empty()] * len(canvases)
        # Canvases of cameras of other shapes (16:9, 4:3, portrait) cannot share a model call.
        for shape in dict.fromkeys(c.shape for c in canvases):
            rows = [i for i, c in enumerate(canvases) if c.shape == shape]
            outputs = self.run(self.adapter.preprocess([canvases[i] for i in rows]))
            for j, i in enumerate(rows):
                results[i] = self.adapter.decode(outputs, j, geometries[i])
        return results
