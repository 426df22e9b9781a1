"""BLIP-2's cost: its encoders at the real size (random weights), and 32 vectors per image in the stores.

    .venv/bin/python -m bench.bench_blip2 encoders        # export ViT-g BLIP-2 + ViT-B-32, img/s and text p50
    .venv/bin/python -m bench.bench_blip2 stores [--images 100000] [--es-images 10000] [--force-merge]
    .venv/bin/python -m bench.bench_blip2                 # both (the export needs about 18 GiB of RAM)

``encoders`` exports transformers' default BLIP-2 configuration (the ViT-g of blip2-itm-vit-g, 32
queries of 256-d) with random weights through ``imagesearch export`` (fp32 + int8; wall time and the
process's peak RAM), then times both variants with ONNX Runtime beside ViT-B-32 in the same run.
``stores`` writes the same images as 32 CLIP-like 256-d vectors each and as one 512-d vector each
(a CLIP model), into the local store and into Elasticsearch (a node started here), and prints size,
build time, query p50 and recall@10 against exact max-over-queries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import CACHE, bench_vectors, cpu_description, latencies_ms, p50, pct, rate, save_results, vit_b32_repository
from imagesearch.config import Settings
from imagesearch.records import ImageRecord

QUERIES, DIM = 32, 256


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _rss_gib() -> float:
    """This process's resident memory now (the peak would hide a reader's growth after the export)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**30


def real_size_folder(folder: Path) -> Path:
    """transformers' default BLIP-2 configuration (what blip2-itm-vit-g uses) and a tokenizer, no weights."""
    from transformers import BertTokenizer, Blip2Config, BlipImageProcessor

    from tests.support.tiny_blip2 import vocabulary

    folder.mkdir(parents=True, exist_ok=True)
    Blip2Config(qformer_config={"use_qformer_text_input": True}).save_pretrained(folder)
    BertTokenizer(vocab={t: i for i, t in enumerate(vocabulary())}).save_pretrained(folder)
    BlipImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(folder)
    return folder


def encoders(batch: int) -> list[dict]:
    from imagesearch.encoders import make_encoder
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions

    repo = CACHE / "blip2-random"
    slug = "blip2-vit-g-random"
    rows: list[dict] = []
    if not (repo / f"{slug}.json").is_file():
        started = time.perf_counter()
        export_model(ExportOptions(family="blip2", pretrained="none", model_config=real_size_folder(CACHE / "blip2-config"),
                                   slug=slug, int8=True), repo, triton_kind="KIND_CPU")
        print(f"export (fp32 + int8, parity checked): {time.perf_counter() - started:.0f} s, peak RAM {_peak_rss_gib():.1f} GiB")
        rows.append({"model": "BLIP-2 ViT-g", "export_s": time.perf_counter() - started, "export_peak_ram_gib": _peak_rss_gib()})
    card = json.loads((repo / f"{slug}.json").read_text())
    sizes = {p.relative_to(repo).as_posix(): p.stat().st_size for p in repo.rglob("model*.onnx*")}
    print(f"files: {', '.join(f'{k} {v / 2**30:.2f} GiB' for k, v in sorted(sizes.items()) if v > 2**26)}")
    print(f"parity: {card['parity']}")
    rng = np.random.default_rng(0)
    texts = [f"a photo of a dog on a beach number {i}" for i in range(50)]
    figures = {}
    for name, repository, model in (("ViT-B-32", vit_b32_repository(), "vit-b-32-random"), ("BLIP-2 ViT-g", repo, slug)):
        for variant in ("fp32", "int8"):
            encoder = make_encoder(Settings(model_repository=repository, model=model, model_variant=variant, batch_size=batch))
            size = encoder.card.image_size
            pixels = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
            img_s = rate(lambda e=encoder, p=pixels: e.encode_images(p), batch, min_seconds=20 if "BLIP" in name else 5)
            text = latencies_ms(lambda i, e=encoder: e.encode_texts([texts[i % len(texts)]]), 20)
            figures[(name, variant)] = img_s
            rows.append({"model": name, "variant": variant, "img_s": img_s, "text_p50_ms": p50(text)})
            print(f"{name:13s} {variant}: {img_s:6.2f} img/s at batch {batch} ({1000 / img_s:7.0f} ms per image, "
                  f"{img_s * 3600:9,.0f} images/hour) | text p50 {p50(text):6.1f} ms | reference check "
                  f"{encoder.health()['reference_check'].get('ok')}")
            encoder.close()
    for variant in ("fp32", "int8"):
        print(
            f"ViT-B-32 / BLIP-2 image speed, {variant}: "
            f"{figures[('ViT-B-32', variant)] / figures[('BLIP-2 ViT-g', variant)]:.0f}x"
        )
    return rows


def image_vectors(n: int, seed: int) -> np.ndarray:
    """[n, 32, 256]: each image's 32 query vectors spread around one CLIP-like image vector (mean
    cosine between two queries of one image about 0.5, as the Q-Former's queries differ)."""
    base = bench_vectors("clustered", n, DIM, seed)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, QUERIES, DIM), np.float32)
    for start in range(0, n, 10_000):
        rows = min(10_000, n - start)
        noise = rng.standard_normal((rows, QUERIES, DIM), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=2, keepdims=True)
        mixed = base[start : start + rows, None, :] + noise
        out[start : start + rows] = mixed / np.linalg.norm(mixed, axis=2, keepdims=True)
    return out


def ids_for(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def fill(store, model: str, vectors: np.ndarray, chunk: int) -> float:
    ids = ids_for(len(vectors))
    started = time.perf_counter()
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        store.upsert_images([ImageRecord(id=i, sources=["url"], width=640, height=480, format="jpeg", bytes=1000) for i in part])
        store.set_vectors(model, part, vectors[start : start + len(part)])
    store.refresh()
    return time.perf_counter() - started


def measure(store, model: str, vectors: np.ndarray, queries: np.ndarray, row: dict | None = None) -> str:
    ids = ids_for(len(vectors))
    store.search(model, queries[0], 10)  # first query: the local store loads its matrix
    lat = latencies_ms(lambda i: store.search(model, queries[i % len(queries)], 10), 100)
    recall = []
    for q in queries[:30]:
        scores = (vectors @ q) if vectors.ndim == 2 else np.einsum("nqd,d->nq", vectors, q).max(1)
        exact = {ids[i] for i in np.argsort(-scores)[:10]}
        recall.append(len(exact & {h.id for h in store.search(model, q, 10)}) / 10)
    if row is not None:
        row.update(p50_ms=p50(lat), p99_ms=pct(lat, 99), recall_at_10=float(np.mean(recall)))
    return f"query p50 {p50(lat):7.1f} ms p99 {pct(lat, 99):7.1f} ms | recall@10 {np.mean(recall):.3f}"


def stores(n_local: int, n_es: int, force_merge: bool = False) -> list[dict]:
    from imagesearch.stores import make_store
    from imagesearch.stores.local import LocalStore
    from tests.support.es_node import start_node

    queries = bench_vectors("clustered", 100, DIM, seed=7)  # text-like: from the same mixture
    clip_queries = bench_vectors("clustered", 100, 512, seed=7)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-blip2-") as tmp:
        for label, vectors, q in (("BLIP-2 32 x 256-d", image_vectors(n_local, seed=1), queries),
                                  ("CLIP 1 x 512-d", bench_vectors("clustered", n_local, 512, seed=1), clip_queries)):
            if not n_local:
                break
            path = Path(tmp) / f"{uuid.uuid4().hex}.sqlite3"
            store = LocalStore(path)
            build = fill(store, "m", vectors, 5_000)
            disk = sum(p.stat().st_size for p in Path(tmp).glob(f"{path.name}*"))
            reader = LocalStore(path)  # a fresh reader, like the API process
            before = _rss_gib()
            started = time.perf_counter()
            reader.search("m", q[0], 10)
            load_s = time.perf_counter() - started
            rows.append({"store": "local (exact)", "images": n_local, "model": label, "build_s": build,
                         "disk_gib": disk / 2**30, "first_query_s": load_s})
            figures = measure(reader, "m", vectors, q, rows[-1])
            print(f"local store, {n_local:,} images, {label}: build {build:6.1f} s | disk {disk / 2**30:5.2f} GiB | "
                  f"first query {load_s:5.1f} s | RAM +{_rss_gib() - before:4.1f} GiB | {figures}")
            rows[-1]["ram_gib"] = _rss_gib() - before
            store.close()
            reader.close()
            path.unlink()
        if n_es:
            node = start_node(heap="2g")
            try:
                for label, vectors, q in (("BLIP-2 32 x 256-d", image_vectors(n_es, seed=1), queries),
                                          ("CLIP 1 x 512-d", bench_vectors("clustered", n_es, 512, seed=1), clip_queries)):
                    prefix = f"b{uuid.uuid4().hex[:8]}"
                    es = make_store(Settings(store="elasticsearch", es_url=node.url, es_index_prefix=prefix,
                                             es_refresh_interval="30s", es_timeout_s=120))
                    build = fill(es, "m", vectors, 500)
                    if force_merge:  # one HNSW graph: slow for nested vectors (over 30 min for 640k on 2 cores)
                        es.es.options(request_timeout=7200).indices.forcemerge(index=f"{prefix}-vectors-*", max_num_segments=1)
                    stats = es.es.indices.stats(index=f"{prefix}-vectors-*", metric="store,segments")["_all"]["total"]
                    rows.append({"store": f"Elasticsearch (int8_hnsw, {stats['segments']['count']} segments)", "images": n_es,
                                 "model": label, "build_s": build, "disk_gib": stats["store"]["size_in_bytes"] / 2**30})
                    print(f"Elasticsearch (int8_hnsw, {stats['segments']['count']} segments), {n_es:,} images, {label}: "
                          f"build {build:6.1f} s | disk {stats['store']['size_in_bytes'] / 2**30:5.2f} GiB | "
                          f"{measure(es, 'm', vectors, q, rows[-1])}")
                    es.close()
            finally:
                node.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", choices=["encoders", "stores", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=100_000, help="images in the local store (0: skip)")
    parser.add_argument("--es-images", type=int, default=10_000, help="images in Elasticsearch (0: skip)")
    parser.add_argument("--force-merge", action="store_true", help="merge each Elasticsearch index to one segment first")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    rows = []
    if args.what in ("encoders", "both"):
        rows += encoders(args.batch)
    if args.what in ("stores", "both"):
        rows += stores(args.images, args.es_images, args.force_merge)
    save_results("bench_blip2", rows, parameters={"batch": args.batch})


if __name__ == "__main__":
    main()
