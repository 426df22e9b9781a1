"""Issue 35 figures: `imagesearch ingest --ray` on one node against the one-machine ingest, the images
in S3-compatible storage against the images folder, and on paper what 100 million URLs take on N
machines with one GPU each.

    .venv/bin/python -m bench.bench_ray [--images 512] [--rounds 3] [--gpu-img-s 31500] [--es-cores 48]

Every row runs the real command in its own process on the same 512 photo-like 1024x768 JPEGs
(ViT-B-32, random weights, fp32, ONNX Runtime on the CPU): a URL list from a local HTTP server (a
child process), or a folder. "Ray on one node" is `--ray local`: a Ray instance of this machine
started by the command, so its start-up is in the wall time, as the model's load is in every row's.
The S3 rows keep the images in SeaweedFS (tests/support/seaweedfs.py) on this machine.

The paper estimate takes the per-image CPU costs measured here (the downloader with its checking
decode, and the decode and resize for the model, each on one core), an encoder rate for one GPU
(`--gpu-img-s`: by default the design's H200 figure for ViT-B/32, fp16, batch 256), Elasticsearch's
bulk rate per core from the newest bench_es result (`--es-cores` in all), and per-host politeness
(8 requests at a time per host, `--request-s` each): the largest host's share of the list sets a
floor that no number of machines lowers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, cpu_description, photo_jpegs, save_results, vit_b32_repository
from imagesearch.config import Settings
from imagesearch.ingest.downloader import download
from imagesearch.model_card import load_card
from imagesearch.preprocess import prepare
from imagesearch.stores.local import LocalStore
from tests.support.cli import clean_env
from tests.support.image_server import serve_forever_in_process
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFS, ensure_weed

SLUG = "vit-b-32-random"
TOTAL_URLS = 100_000_000


def run(env: dict[str, str], *args: str) -> tuple[float, str]:
    """`imagesearch ARGS` as its own process: its wall seconds and what it printed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "imagesearch.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`imagesearch {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    return time.perf_counter() - started, done.stdout


def measure_rows(tmp: Path, urls: Path, folder: Path, base: dict[str, str], s3: SeaweedFS, images: int) -> dict[str, float]:
    """img/s (images / the command's wall time) of each way, a fresh data folder (and bucket) each."""
    def env(name: str, bucket: bool = False) -> dict[str, str]:
        extra = {"IMAGESEARCH_DATA_DIR": str(tmp / name)}
        if bucket:
            extra |= {"IMAGESEARCH_BLOBS": f"s3://{s3.create_bucket(f'bench-{name}-{time.time_ns()}')}/images",
                      "IMAGESEARCH_S3_ENDPOINT_URL": s3.endpoint, "IMAGESEARCH_S3_ACCESS_KEY_ID": ACCESS_KEY,
                      "IMAGESEARCH_S3_SECRET_ACCESS_KEY": SECRET_KEY, "IMAGESEARCH_S3_REGION": REGION}
        return {**base, **extra}

    ways = {
        "URL list, `imagesearch ingest --urls` (one process)": [("ingest", "--urls", str(urls))],
        "URL list, `imagesearch ingest --urls --ray local` (Ray on one node)": [
            ("ingest", "--urls", str(urls), "--ray", "local")
        ],
        "folder, `imagesearch ingest --folder` (one process)": [("ingest", "--folder", str(folder))],
        "folder, `ingest download --folder`, then `ingest embed --ray local`": [
            ("ingest", "download", "--folder", str(folder)),
            ("ingest", "embed", "--ray", "local"),
        ],
        "URL list, `imagesearch ingest --urls`, images in S3 (SeaweedFS)": [("ingest", "--urls", str(urls))],
        "URL list, `ingest --urls --ray local`, images in S3 (SeaweedFS)": [("ingest", "--urls", str(urls), "--ray", "local")],
    }
    rates = {}
    for name, commands in ways.items():
        settings = env(f"row{len(rates)}-{time.time_ns()}", bucket="S3" in name)
        seconds = 0.0
        for command in commands:
            took, printed = run(settings, *command)
            seconds += took
            assert re.search(rf"\b{images} embedded\b", printed) or "download" in command, printed
        rates[name] = images / seconds
        print(f"  {name}: {rates[name]:.1f} img/s ({seconds:.1f} s)", flush=True)
    return rates


def stage_costs(jpegs: list[bytes], urls: list[str], repo: Path, tmp: Path) -> dict[str, float]:
    """CPU ms per image of the download (fetch, checking decode, hash, file, record) and of the decode
    and resize for the model, in this process on one core at a time."""
    settings = Settings(data_dir=tmp / "costs", model_repository=repo, model=SLUG, allow_private_networks=True)
    store = LocalStore(settings.data_dir / "store.sqlite3")
    cpu = time.process_time()
    summary = asyncio.run(download(urls, store, settings))
    download_ms = (time.process_time() - cpu) * 1000 / len(urls)
    store.close()
    assert summary.downloaded == len(set(jpegs)), summary.describe()
    card = load_card(repo, SLUG)
    cpu = time.process_time()
    for data in jpegs:
        prepare(data, card)
    return {"download_cpu_ms": download_ms, "decode_cpu_ms": (time.process_time() - cpu) * 1000 / len(jpegs)}


def es_docs_per_core_s() -> tuple[float, str]:
    """Elasticsearch's bulk rate (int8_hnsw, 512-d) per core of its node, from the newest bench_es result."""
    found = []
    for path in RESULTS.glob("*.json"):
        result = json.loads(path.read_text())
        rows = [r for r in result.get("figures", []) if r.get("index") == "int8_hnsw" and r.get("indexing_docs_s")]
        cores = re.search(r"(\d+) cores", result.get("cpu", ""))
        if result.get("benchmark") == "bench_es" and rows and cores:
            found.append((result["date"], rows[0]["indexing_docs_s"] / int(cores.group(1)), f"{path.name} ({result['cpu']})"))
    if not found:
        return 500.0, "no bench_es result: assumed"
    _, rate, source = max(found)
    return rate, source


def paper(costs: dict[str, float], args: argparse.Namespace) -> list[dict]:
    """What 100M URLs take on N machines with one GPU and ``args.cores`` cores each, with an
    Elasticsearch cluster of ``args.es_cores`` cores, and what bounds it."""
    cpu_img_s = args.cores * 1000 / (costs["download_cpu_ms"] + costs["decode_cpu_ms"])  # every core downloads and decodes
    per_machine = min(cpu_img_s, args.gpu_img_s, args.network_img_s)
    machine_bound = "CPU (download + decode)" if per_machine == cpu_img_s else "GPU" if per_machine == args.gpu_img_s \
        else "network"
    es_cap = args.es_cores * es_docs_per_core_s()[0]
    rows = []
    for machines in (1, 4, 16, 64, 256):
        rate = min(machines * per_machine, es_cap)
        rows.append({"row": f"paper estimate, {machines} machines", "machines": machines, "img_s": rate,
                     "hours": TOTAL_URLS / rate / 3600, "bound_by": machine_bound if rate < es_cap else
                     f"Elasticsearch bulk indexing ({args.es_cores} cores)"})
    return rows


def politeness_hours(share: float, request_s: float, per_host: int = 8) -> float:
    """The least time a list takes whose largest host holds ``share`` of 100M URLs: that host's URLs
    go one part (one task) at a time, ``per_host`` requests at once (IMAGESEARCH_DOWNLOAD_PER_HOST)."""
    return TOTAL_URLS * share * request_s / per_host / 3600


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu-img-s", type=float, default=31_500.0, help="one GPU's ViT-B/32 img/s (the design's H200 figure)")
    parser.add_argument("--cores", type=int, default=16, help="CPU cores of each GPU machine in the estimate")
    parser.add_argument("--network-img-s", type=float, default=8_000.0, help="one machine's network: 10 Gb/s of ~150 KB images")
    parser.add_argument("--request-s", type=float, default=0.5, help="an image request's time on the internet (estimate)")
    parser.add_argument("--es-cores", type=int, default=48, help="cores of the Elasticsearch cluster (3 nodes of 16)")
    args = parser.parse_args()
    repo, jpegs = vit_b32_repository(), photo_jpegs(args.images, seed=3)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as name:
        tmp = Path(name)
        folder = tmp / "photos"
        folder.mkdir()
        for i, data in enumerate(jpegs):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        ctx = mp.get_context("spawn")
        ready, port = ctx.Event(), ctx.Value("i", 0)
        server = ctx.Process(target=serve_forever_in_process, args=({f"/{i:05d}.jpg": d for i, d in enumerate(jpegs)},
                                                                    ready, port), daemon=True)
        server.start()
        s3 = SeaweedFS(ensure_weed())
        try:
            ready.wait(60)
            url_list = [f"http://127.0.0.1:{port.value}/{i:05d}.jpg" for i in range(len(jpegs))]
            (tmp / "urls.txt").write_text("\n".join(url_list) + "\n")
            s3.start()
            base = clean_env(PYTHONPATH=str(Path(__file__).resolve().parents[1]), IMAGESEARCH_MODEL_REPOSITORY=str(repo),
                             IMAGESEARCH_MODEL=SLUG, IMAGESEARCH_ALLOW_PRIVATE_NETWORKS="true", RAY_USAGE_STATS_ENABLED="0")
            print(f"{cpu_description()}; ViT-B-32 fp32 (random weights), ONNX Runtime, {args.images} JPEGs 1024x768", flush=True)
            rounds = []
            for round_ in range(args.rounds):  # each round runs every row; its ratios compare rows of one round
                print(f" round {round_ + 1}", flush=True)
                rounds.append(measure_rows(tmp, tmp / "urls.txt", folder, base, s3, args.images))
            costs = stage_costs(jpegs, url_list, repo, tmp)
        finally:
            s3.close()
            server.terminate()
            server.join(5)
    report(rounds, costs, args)


def report(rounds: list[dict[str, float]], costs: dict[str, float], args: argparse.Namespace) -> None:
    """The median of each row and of each ratio over the rounds (the machine's speed drifts between rounds)."""
    names = list(rounds[0])
    pairs = {"Ray on one node / one process, URL list": (1, 0), "Ray on one node / one process, folder": (3, 2),
             "images in S3 / in the folder, one process": (4, 0), "images in S3 / in the folder, Ray on one node": (5, 1)}
    rates = {name: statistics.median(r[name] for r in rounds) for name in names}
    ratios = {what: statistics.median(r[names[a]] / r[names[b]] for r in rounds) for what, (a, b) in pairs.items()}
    print(f" median of {len(rounds)} rounds:")
    for name, rate in rates.items():
        print(f"  {name}: {rate:.1f} img/s (rounds: {', '.join(f'{r[name]:.1f}' for r in rounds)})")
    for what, ratio in ratios.items():
        print(f"  {what}: {ratio:.2f}")
    print(f"  per image on one core: download {costs['download_cpu_ms']:.1f} ms CPU (fetch, checking decode, hash, file, "
          f"record), decode and resize for the model {costs['decode_cpu_ms']:.1f} ms CPU")
    es_rate, es_source = es_docs_per_core_s()
    estimate = paper(costs, args)
    print(f"  100M URLs on paper: {args.cores} cores and one GPU ({args.gpu_img_s:.0f} img/s) per machine, Elasticsearch "
          f"{args.es_cores} cores at {es_rate:.0f} docs/s each (int8_hnsw; {es_source})")
    for row in estimate:
        print(
            f"    {row['machines']:>4} machines: {row['img_s']:>7.0f} img/s, {row['hours']:>6.1f} h; bound by {row['bound_by']}"
        )
    floors = {share: politeness_hours(share, args.request_s) for share in (0.001, 0.01, 0.05)}
    print("    whatever the machines, the largest host's URLs at 8 requests of "
          f"{args.request_s} s: " + ", ".join(f"{share:.1%} of the list: {hours:.1f} h" for share, hours in floors.items()))
    figures = [{"row": name, "img_s": rate, "rounds": [r[name] for r in rounds]} for name, rate in rates.items()]
    figures += [{"row": f"ratio: {what}", "ratio": ratio} for what, ratio in ratios.items()]
    save_results("bench_ray", figures + estimate, parameters={
        "model": "ViT-B-32, random weights, fp32, ONNX Runtime", "images": args.images, "rounds": args.rounds, **costs,
        "gpu_img_s": args.gpu_img_s, "cores_per_machine": args.cores, "network_img_s": args.network_img_s,
        "request_s": args.request_s, "es_cores": args.es_cores, "es_docs_s_per_core": es_rate,
        **{f"politeness_floor_h_largest_host_{share:.1%}": hours for share, hours in floors.items()}})


if __name__ == "__main__":
    main()
