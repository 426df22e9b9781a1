"""Downloader throughput: URLs/s against a local HTTP server serving small images.

    .venv/bin/python -m bench.bench_downloader [--n 3000] [--concurrency 64]

The server (tests/support/image_server.py) runs in a child process so its CPU time is not charged
to the downloader; on a 2-core machine they still share the cores. First the bare HTTP clients
side by side (a GET and its body, nothing else, 8 connections): httpx, which the downloader used
until it measured this, and aiohttp, which it uses now. Then two figures of the downloader:
  fetch only      fetch_image for every URL (HTTP + redirects/limits checks + decode check), no storage;
  full download   imagesearch.ingest.downloader.download: the above + sha256 + content-addressed file (written
                  by a writer thread per batch, one filesystem sync per batch) + records in the
                  local SQLite store.
Creating a file is printed too: on ext4 without a journal (some VMs' disks), the kernel skips inodes
freed in the last minutes when it allocates one, so for minutes after many files were
deleted (a previous run's folder, a test suite) each new file costs up to ~1.5 ms of CPU instead of
~0.04, and the full download slows by up to a third. Compare runs only at like creation costs.
The SSRF guard is off (the server is on 127.0.0.1), so these figures exclude DNS lookups. The
downloader's CPU time per URL (all its threads, not the server's) is printed too: it is steadier
than URLs/s on a busy machine, and cores / (CPU per URL) bounds what one process can reach.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path

from bench.common import save_results
from imagesearch.config import Settings
from imagesearch.fetch import FetchOptions, fetch_image, make_client
from imagesearch.ingest.downloader import download
from imagesearch.stores.local import LocalStore
from tests.support.image_server import serve_forever_in_process
from tests.support.shapes import CLASSES, draw_shape


def make_images(n: int, size: tuple[int, int]) -> dict[str, bytes]:
    rng = random.Random(0)
    images = {}
    for i in range(n):
        colour, shape = CLASSES[i % len(CLASSES)]
        images[f"/img/{i}.jpg"] = draw_shape(colour, shape, rng, size).encode("JPEG", quality=85)
    return images


async def bare_gets(urls: list[str], client_name: str, connections: int) -> float:
    """Seconds for a plain GET of every URL with one HTTP client library, ``connections`` at a time."""
    import aiohttp
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    started = time.perf_counter()
    if client_name == "httpx":
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
            async def get_httpx():
                while not queue.empty():
                    (await client.get(queue.get_nowait())).raise_for_status()
            await asyncio.gather(*(get_httpx() for _ in range(connections)))
    else:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            async def get_aiohttp():
                while not queue.empty():
                    async with session.get(queue.get_nowait()) as response:
                        response.raise_for_status()
                        await response.read()
            await asyncio.gather(*(get_aiohttp() for _ in range(connections)))
    return time.perf_counter() - started


async def fetch_only(urls: list[str], options: FetchOptions, concurrency: int) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)

    async def worker(client):
        while not queue.empty():
            await fetch_image(client, queue.get_nowait(), options)

    async with make_client(options, max_connections=concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started


def file_creation_us(folder: Path, n: int = 200) -> float:
    """Microseconds to create one empty file in ``folder`` now (kept: deleting them would slow the next)."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for i in range(n):
        os.close(os.open(folder / f"probe-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="URLs (distinct small images)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=8, help="all URLs are on one host, so this bounds concurrency")
    args = parser.parse_args()

    images = make_images(args.n, (args.size, args.size))
    mean_bytes = sum(map(len, images.values())) / len(images)
    ctx = mp.get_context("spawn")
    ready, port = ctx.Event(), ctx.Value("i", 0)
    server = ctx.Process(target=serve_forever_in_process, args=(images, ready, port), daemon=True)
    server.start()
    try:
        ready.wait(60)
        urls = [f"http://127.0.0.1:{port.value}{path}" for path in images]
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), allow_private_networks=True,
                                download_concurrency=args.concurrency, download_per_host=args.per_host)
            options = FetchOptions.from_settings(settings)
            workers = min(args.concurrency, args.per_host)
            asyncio.run(fetch_only(urls[:200], options, workers))  # warm-up
            print(f"cores: {os.cpu_count()} (load average {os.getloadavg()[0]:.1f}), {args.n} URLs, "
                  f"{args.size}x{args.size} JPEG, {mean_bytes:.0f} bytes mean, concurrency {args.concurrency}, "
                  f"per host {args.per_host}")
            figures = []
            for client_name in ("httpx", "aiohttp"):
                cpu = time.process_time()
                seconds = asyncio.run(bare_gets(urls, client_name, workers))
                cpu_ms = (time.process_time() - cpu) / args.n * 1000
                figures.append({"stage": f"bare GET with {client_name}", "urls_s": args.n / seconds, "cpu_ms_per_url": cpu_ms})
                print(
                    f"bare {client_name + ' GET:':13s}{args.n / seconds:6.0f} URLs/s  "
                    f"({seconds:.2f} s; client CPU {cpu_ms:.2f} ms/URL)"
                )
            cpu = time.process_time()
            seconds = asyncio.run(fetch_only(urls, options, workers))
            cpu_ms = (time.process_time() - cpu) / args.n * 1000
            print(f"fetch only:    {args.n / seconds:6.0f} URLs/s  ({seconds:.2f} s; downloader CPU {cpu_ms:.2f} ms/URL)")
            figures.append({"stage": "fetch only", "urls_s": args.n / seconds, "cpu_ms_per_url": cpu_ms})
            creation_us = file_creation_us(settings.data_dir / "probe")
            print(f"creating a file in the data folder: {creation_us:.0f} us"
                  + ("  (slow: many files deleted in the last minutes? see the docstring)" if creation_us > 300 else ""))
            store = LocalStore(settings.data_dir / "store.sqlite3")
            cpu = time.process_time()
            try:
                summary = asyncio.run(download(urls, store, settings))
            finally:
                store.close()
            cpu_ms = (time.process_time() - cpu) / args.n * 1000
            assert summary.downloaded == args.n, summary.describe()
            print(f"full download: {args.n / summary.seconds:6.0f} URLs/s  ({summary.seconds:.2f} s; downloader CPU "
                  f"{cpu_ms:.2f} ms/URL; {summary.describe()})")
            print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share these cores)")
            figures.append({"stage": "full download into the local store", "urls_s": args.n / summary.seconds,
                            "cpu_ms_per_url": cpu_ms})
            save_results("bench_downloader", figures, parameters={
                "urls": args.n, "image_px": args.size, "concurrency": args.concurrency, "per_host": args.per_host,
                "file_creation_us": round(creation_us)})
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
