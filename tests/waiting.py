"""Waiting in a test for something a real process does, without a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120.0, every_s: float = 0.1) -> Any:
    """``probe()``'s first truthy value; the test fails, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every_s)
    return value
