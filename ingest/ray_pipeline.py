"""`imagesearch ingest --ray ADDRESS`: the ingest as a Ray Data pipeline on a Ray cluster (the ``ray`` extra).

    read the list ─► parse ─► split by host ─► download (a part's hosts per task) ─► decode (CPU tasks)
      ─► embed (actors holding the model, a GPU each where there is one) ─► vectors in bulk to the store

The stages are ingest/ray_stages.py's; they call the one-machine ingest's own functions. The store
stays the work queue and the ids are content hashes, so a task that Ray retries, or a rerun after a
crash, adds nothing twice: a URL with a record is skipped, a vector written again is the same
vector. What a lost task had stored but not embedded is still pending in the store; every run ends
by embedding what is pending (that is also all `ingest embed --ray` does), so a run that finishes
leaves nothing half done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.csv
import pyarrow.parquet
import ray
import ray.data
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from imagesearch.config import Settings
from imagesearch.ingest.downloader import DownloadSummary
from imagesearch.ingest.pipeline import Ingest
from imagesearch.ingest.progress import Progress
from imagesearch.ingest.ray_shared import ClusterRefused, check_shared
from imagesearch.ingest.ray_stages import EmbedBatches, Tally, decode_batch, download_part, parse_rows
from imagesearch.model_card import ModelCard, load_card

_POLL_S = 1.0


def ingest_on_ray(ingest: Ingest, address: str, stage: str | None) -> bool:
    """Run ``imagesearch ingest [download|embed] --ray ADDRESS``; the lines go to ``ingest.lines``.
    False (and a message) when the cluster refuses the configuration or the pipeline fails."""
    settings, urls = absolute_paths(ingest.settings), ingest.plan.urls
    if urls is not None and "://" not in str(urls) and not Path(urls).is_file():
        ingest.say(f"error: URL file {urls} does not exist")
        return False
    try:
        ray.init(address=None if address == "local" else address, logging_level=logging.WARNING,
                 configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        ingest.say(f"error: no Ray cluster at {address}: {exc}")
        return False
    try:
        check_shared(settings)
        run = _RayRun(ingest, settings)
        if stage != "embed" and ingest.plan.urls:
            run.urls(ingest.plan.urls, embed=stage != "download")
        if stage != "download":
            run.pending()
        run.report()
        if stage != "download":
            ingest.tag_stored()  # on the driver, from the stored vectors: no image is read again
        return True
    except ClusterRefused as exc:
        ingest.say(f"error: {exc}")
        return False
    except (ray.exceptions.RayError, OSError) as exc:
        ingest.say(f"error: the Ray pipeline failed: {root_cause(exc)}; what was stored is kept: run the same "
                   "command again to go on")
        return False
    finally:
        ray.shutdown()


def absolute_paths(settings: Settings) -> Settings:
    """The driver's settings for the workers, whose working folder is not the driver's."""
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve(),
                                       "model_repository": settings.model_repository.resolve()})


def root_cause(exc: BaseException) -> str:
    """The error a task raised, under Ray's wrappers (its last line: the type and message)."""
    while getattr(exc, "cause", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__  # type: ignore[assignment]
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def read_list(path: Path | str) -> ray.data.Dataset:
    """A URL list: Parquet or CSV (img2dataset's url and caption columns), else text (a URL per
    line, an optional TAB and caption). A list on shared or cloud storage (``s3://…``) is read by
    the cluster's tasks; a local file by this process, which hands it to the cluster."""
    suffixes = [suffix.lower() for suffix in Path(str(path)).suffixes]
    kind = "parquet" if ".parquet" in suffixes else "csv" if ".csv" in suffixes else "text"
    if "://" in str(path):
        if kind == "parquet":
            return ray.data.read_parquet(str(path))
        return ray.data.read_csv(str(path)) if kind == "csv" else ray.data.read_text(str(path))
    if kind == "parquet":
        table = pyarrow.parquet.read_table(path)
    elif kind == "csv":
        table = pyarrow.csv.read_csv(path)
    else:
        with open(path, encoding="utf-8", errors="replace") as f:  # a bad byte spoils one line, not the list
            table = pyarrow.table({"text": f.read().splitlines()})
    return ray.data.from_arrow(table)


class _RayRun:
    def __init__(self, ingest: Ingest, settings: Settings):
        self.ingest, self.settings = ingest, settings
        self.cards = [load_card(settings.model_repository, slug) for slug in ingest.models]
        for card in self.cards:
            ingest.store.ensure_model(card.slug, card.dim, card.vectors_per_image)
        # What this run embedded is read from the store, not added up from the tasks: a task that
        # Ray runs again writes its vectors again, and they are the same vectors.
        self.embedded_before = {card.slug: ingest.store.counts(card.slug).embedded for card in self.cards}
        # On the driver's node: the counts outlive any other node (a lost worker node loses no count).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.tally: Any = ray.remote(Tally).options(num_cpus=0, scheduling_strategy=here).remote()
        resources = ray.cluster_resources()
        self.cpus, self.gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        self.started = time.monotonic()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # our own progress lines (ingest/progress.py) say what happens
        context.print_on_execution_start = False

    def urls(self, path: Path, embed: bool) -> None:
        parts = self.settings.ray_host_partitions or max(1, 4 * self.cpus)
        dataset = read_list(path).map_batches(partial(parse_rows, parts=parts, tally=self.tally),
                                              batch_format="numpy", batch_size=4096)
        dataset = dataset.groupby("part", num_partitions=parts).map_groups(
            partial(download_part, settings=self.settings, tally=self.tally, skip_removed=not self.ingest.plan.retry_removed),
            batch_format="numpy", num_cpus=self.settings.ray_download_cpus)
        self._drive(self._embedding(dataset, self.cards) if embed else dataset)

    def pending(self) -> None:
        """Embed what is pending, a round of ``ray_embed_round`` images at a time, model by model."""
        for card in self.cards:
            while records := self.ingest.store.pending(card.slug, self.settings.ray_embed_round):
                before = self._done(card.slug)
                rows = [{"id": r.id, "format": r.format} for r in records]
                self._drive(self._embedding(ray.data.from_items(rows), [card]))
                if self._done(card.slug) == before:
                    raise ray.exceptions.RayError(f"{len(records)} images stay pending for {card.slug}")

    def _embedding(self, dataset: ray.data.Dataset, cards: list[ModelCard]) -> ray.data.Dataset:
        batch = self.settings.batch_size
        # Ray runs consecutive stages with the same resources as one: on CPUs only the decode runs inside
        # the embed actors; with a GPU it stays tasks of its own, on as many CPUs as the cluster has.
        dataset = dataset.map_batches(partial(decode_batch, settings=self.settings, cards=cards),
                                      batch_format="numpy", batch_size=batch, num_cpus=1)
        on_gpu = self.gpus > 0 and self.settings.encoder != "triton"
        actors = self.settings.ray_embedders or (self.gpus if on_gpu else 1)
        gpus = 1 / len(cards) if on_gpu else 0  # several models' actors share each GPU
        # Two batches at once in each actor: one is decoded (on CPUs only, Ray runs the decode inside the
        # actor) or written to the store while the other is encoded, as in the one-machine embedder.
        pool = ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True)
        for n, card in enumerate(cards):
            dataset = dataset.map_batches(
                EmbedBatches, batch_format="numpy", batch_size=batch, compute=pool,
                fn_constructor_kwargs={"settings": self.settings, "slug": card.slug, "column": f"pixels_{n}",
                                       "tally": self.tally},
                num_gpus=gpus, num_cpus=self.settings.ray_embed_cpus)
        return dataset

    def _drive(self, dataset: ray.data.Dataset) -> None:
        """Run the pipeline to its end (streaming: every stage at once), with progress lines."""
        monitor = _Monitor(self.tally, [card.slug for card in self.cards])
        monitor.start()
        try:
            for _ in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                pass
        finally:
            monitor.stop()

    def _counts(self) -> dict[str, int]:
        return dict(ray.get(self.tally.snapshot.remote()))

    def _done(self, slug: str) -> int:
        counts = self._counts()
        return sum(n for event, n in counts.items() if event == f"embedded:{slug}" or event.startswith(f"embed_failed:{slug}:"))

    def report(self) -> None:
        """The summary lines of a one-machine ingest, from every task's counts."""
        counts, seconds = self._counts(), time.monotonic() - self.started
        if self.ingest.plan.urls and any(key.startswith("summary:") for key in counts):
            summary = download_summary(counts, seconds)
            malformed, again = counts.get("malformed", 0), counts.get("parts_run_again", 0)
            self.ingest.lines.append("download (ray): " + summary.describe()
                                     + (f", {malformed} malformed lines" if malformed else "")
                                     + (f" ({again} parts run again by Ray after a lost node)" if again else ""))
        for card in self.cards:
            embedded = self.ingest.store.counts(card.slug).embedded - self.embedded_before[card.slug]
            failed = ", ".join(f"{key.rsplit(':', 1)[1]} {n}" for key, n in sorted(counts.items())
                               if key.startswith(f"embed_failed:{card.slug}:")) or "none"
            name = "" if len(self.cards) == 1 else f" {card.slug}"
            self.ingest.lines.append(f"embed (ray){name}: {embedded} embedded in {seconds:.1f}s "
                                     f"({embedded / max(seconds, 1e-9):.1f} img/s), failed: {failed}")


def download_summary(counts: dict[str, int], seconds: float) -> DownloadSummary:
    """The parts' download summaries (``summary:<field>`` and ``summary:failed:<reason>``), added up."""
    summary = DownloadSummary(seconds=seconds)
    for key, n in counts.items():
        if not key.startswith("summary:"):
            continue
        field = key.removeprefix("summary:")
        if field.startswith("failed:"):
            summary.failed[field.removeprefix("failed:")] += n
        else:
            setattr(summary, field, getattr(summary, field) + n)
    return summary


class _Monitor:
    """Progress while the pipeline runs: the counts of every task, read from the tally each second,
    as the one-machine ingest's bars (a terminal) or periodic lines (a log)."""

    def __init__(self, tally: Any, slugs: Iterable[str]):
        self.tally, self.seen = tally, Counter[str]()
        self.download = Progress("download (ray)")
        self.embeds = {slug: Progress(f"embed {slug} (ray)") for slug in slugs}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._poll()
        for progress in [self.download, *self.embeds.values()]:
            progress.close()

    def _run(self) -> None:
        while not self._stopping.wait(_POLL_S):
            self._poll()

    def _poll(self) -> None:
        try:
            counts = Counter(ray.get(self.tally.snapshot.remote(), timeout=10))
        except ray.exceptions.RayError:
            return  # the tally's node is gone for a moment: the next poll catches up
        for key, n in (counts - self.seen).items():
            event, _, rest = key.partition(":")
            if event in ("embedded", "embed_failed"):
                slug, _, reason = rest.partition(":")
                if slug in self.embeds:
                    self.embeds[slug]("embedded" if event == "embedded" else f"failed:{reason}", n)
            elif event != "summary":
                self.download(key, n)
        self.seen = counts
