"""Choosing onnxruntime execution providers: TensorRT, then CUDA, then CPU, by config and availability."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

ProviderName = Literal["tensorrt", "cuda", "cpu"]
ORT_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def choose_providers(preference: Sequence[ProviderName], available: Sequence[str]) -> list[str]:
    """The preferred providers this onnxruntime build has, in order, always ending with CPU.

    CPU is always kept last: onnxruntime assigns to it the nodes a GPU provider cannot run, and it
    is the fallback on machines (such as CI) that have no GPU at all.
    """
    chosen = [ORT_NAMES[p] for p in preference if ORT_NAMES[p] in available and p != "cpu"]
    chosen.append(ORT_NAMES["cpu"])
    return chosen
