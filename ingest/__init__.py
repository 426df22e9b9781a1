"""Ingest: URL downloader, folder scanner and embed worker (the store is the work queue)."""
