"""structlog set-up: console lines for a person at a terminal, JSON lines for machines."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def with_site_and_camera(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every JSON line has ``site`` and ``camera`` (null when the line is about no one camera or site), so
    a log query can filter on them without first asking whether the key exists."""
    event.setdefault("site", None)
    event.setdefault("camera", None)
    return event


def configure(json_lines: bool = False, level: int = logging.INFO) -> None:
    os.environ["FLUX_SECU_LOG_JSON"] = "1" if json_lines else "0"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([with_site_and_camera] if json_lines else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*args: Any) -> structlog.PrintLogger:
    # The stderr of the moment the line is logged, not of the moment logging was configured: a test
    # harness (pytest's capture) swaps and closes stderr, and lines logged later from a thread
    # (MQTT, store retries) would fail on the closed file.
    return structlog.PrintLogger(sys.stderr)


def configure_from_env() -> None:
    """For actor processes: follow the driver's choice, passed down in the environment."""
    configure(json_lines=os.environ.get("FLUX_SECU_LOG_JSON") == "1")
