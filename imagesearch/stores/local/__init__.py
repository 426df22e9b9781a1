"""The embedded vector store: one SQLite database on disk, searched in memory."""

from imagesearch.stores.local.store import LocalStore

__all__ = ["LocalStore"]
