"""Stores behind one small interface (:class:`flux_secu.store.base.Store`)."""

from __future__ import annotations

from flux_secu.config import StoreConfig
from flux_secu.store.base import Store, StoredEvent, StoredIncident, StoreUnavailable
from flux_secu.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoreUnavailable", "StoredEvent", "StoredIncident", "open_store"]


def open_store(config: StoreConfig) -> Store:
    if config.kind == "redis":
        # Imported here: the embedded default must not need a Redis client to start.
        from flux_secu.store.redis import RedisStore

        return RedisStore(config.url.get_secret_value(), config.prefix)
    return SQLiteStore(config.path)
