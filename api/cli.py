"""`imagesearch serve`: run the search API with uvicorn (one process: the encoder lives in it)."""

from __future__ import annotations

import argparse
import signal

from imagesearch.config import get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default: IMAGESEARCH_API_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: IMAGESEARCH_API_PORT, 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from imagesearch.api.app import create_app

    settings = get_settings()
    host, port = args.host or settings.api_host, args.port or settings.api_port
    print(f"search API on http://{host}:{port} (docs at /docs), data in {settings.data_dir}", flush=True)
    # uvicorn shuts down cleanly on SIGTERM/SIGINT, then raises the signal again for the handler it
    # found: with these, a clean stop (`docker compose stop`, Ctrl-C) ends with exit status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level)
    return 0
