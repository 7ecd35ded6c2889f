"""Stores behind one small interface (:class:`flux_secu.store.base.Store`)."""

from __future__ import annotations

from flux_secu.config import StoreConfig
from flux_secu.store.base import Store, StoredEvent, StoredIncident
from flux_secu.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoredEvent", "StoredIncident", "open_store"]


def open_store(config: StoreConfig) -> Store:
    return SQLiteStore(config.path)
