"""The pool's GPU request reaches Ray's autoscaler (its resource-request channel), without a GPU."""

from __future__ import annotations

import json

import pytest

from flux_secu.autoscale import gpu_bundles, request_gpu_nodes
from flux_secu.config import InferenceConfig


def test_gpu_bundles_follow_the_pool_size_and_nothing_without_gpus() -> None:
    gpu = InferenceConfig(gpus_per_actor=1, cpus_per_actor=2)
    assert gpu_bundles(gpu, 3) == [{"GPU": 1, "CPU": 2}] * 3
    assert gpu_bundles(InferenceConfig(), 3) == []


def test_the_request_is_what_ray_autoscaler_reads(ray_session: None) -> None:
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    if is_autoscaler_v2():
        pytest.skip("autoscaler v2 keeps requests in the GCS, not in the key-value channel read here")
    inference = InferenceConfig(gpus_per_actor=0.5, cpus_per_actor=1)
    assert request_gpu_nodes(inference, 4) is True
    assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == [{"GPU": 0.5, "CPU": 1}] * 4
    request_gpu_nodes(inference, 1)  # scaling down replaces the request: the autoscaler may drop nodes
    assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == [{"GPU": 0.5, "CPU": 1}]
    assert request_gpu_nodes(InferenceConfig(), 2) is False  # a CPU pool asks for nothing
    assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == [{"GPU": 0.5, "CPU": 1}]
