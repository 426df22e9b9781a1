"""`imagesearch ui`: run the Streamlit web UI (headless server; open the printed address)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from imagesearch.config import get_settings

APP = Path(__file__).resolve().parent / "app.py"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default: IMAGESEARCH_UI_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: IMAGESEARCH_UI_PORT, 8501)")
    parser.add_argument("--api-url", help="the search API (default: IMAGESEARCH_API_URL)")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    host, port = args.host or settings.ui_host, args.port or settings.ui_port
    if args.api_url:
        os.environ["IMAGESEARCH_API_URL"] = args.api_url
    print(f"web UI on http://{host}:{port}, using the API at {os.environ.get('IMAGESEARCH_API_URL', settings.api_url)}",
          flush=True)
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--global.developmentMode", "false", "--client.toolbarMode", "viewer",
        "--server.maxUploadSize", str(max(1, settings.max_upload_bytes // 2**20)),  # MB; the API enforces the exact cap
    ]
    # Become Streamlit (same pid): Ctrl-C and SIGTERM reach it directly, nothing is left behind.
    os.execv(sys.executable, command)
    return 0  # not reached
