"""The one settings class every service reads: environment variables prefixed ``IMAGESEARCH_``.

The settings are grouped by concern, one class per section; ``Settings`` combines them, so every
variable keeps its flat name (``IMAGESEARCH_ES_URL``, not a nested one). Each field's description is
what the generated configuration reference (docs/configuration.md) says about it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagesearch import __version__
from imagesearch.model_card import Variant
from imagesearch.records import MAX_K

EsIndexType = Literal["int8_hnsw", "hnsw", "bbq_hnsw"]  # dense_vector index_options types the store creates

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
HOMEPAGE = "https://github.com/imagesearch/imagesearch"
# Up to this many vectors of a model the local store searches exactly (fast enough that no graph index
# is worth building or keeping); bench/bench_store.py measures both sides of it.
LOCAL_INDEX_MIN_VECTORS = 100_000


class PathSettings(BaseModel):
    """Where things live."""

    data_dir: Path = Field(Path("./var"), description="images, the local store and its indexes")
    model_repository: Path = Field(Path("./model_repository"), description="the exported models (Triton's layout)")


class ModelSettings(BaseModel):
    """Models and encoders."""

    model: str = Field("", description="active model slug; empty = the only/first model in the repository")
    models: str = Field("", description="several models side by side: comma-separated slugs, each image embedded with "
                        "every one and each served by the API, the first the default; empty = IMAGESEARCH_MODEL alone")
    model_variant: Variant = Field("fp32", description="which exported file the encoder loads: fp32, fp16 (GPUs) or "
                                   "int8 (CPUs)")
    reference_check: Literal["refuse", "warn"] = Field(
        "refuse", description="at load, a model file that misses its parity gate on this machine: refuse it or only warn")
    encoder: Literal["onnx", "openvino", "triton"] = Field(
        "onnx", description="onnx: ONNX Runtime in-process; openvino: OpenVINO in-process (the fastest on a CPU, bf16 where "
        "the CPU has it); triton: a Triton server")
    onnx_threads: int = Field(0, description="threads of the in-process encoder (ONNX Runtime or OpenVINO); 0 = all cores")
    onnx_image_runs: int = Field(
        0, ge=0, description="`imagesearch ingest` with ONNX Runtime on a CPU: parts of each image batch (8 images at most) run "
        "at once, each on its share of the threads (more images/s: the threads do not wait for each other at every layer); "
        "0 = one per thread, at most 8. The API encodes one query at a time on all threads")
    openvino_precision: Literal["auto", "f32", "bf16"] = Field(
        "auto", description="OpenVINO's arithmetic: auto = bf16 where the CPU multiplies it natively (AMX, AVX-512 BF16), else f32")
    onnx_text_spinning: bool = Field(
        False, description="let the text encoder's threads spin between runs (off: they sleep and leave the cores to the search)")
    onnx_providers: str = Field("", description="comma-separated ONNX Runtime providers; empty = CUDA if present, else CPU")
    batch_size: int = Field(32, ge=1, description="images per encoder call while embedding")
    encoder_inflight: int = Field(1, ge=1, description="image batches in flight to the encoder (raise for Triton)")
    decode_workers: int = Field(0, ge=0, description="decode/resize worker threads; 0 = one per core")
    dependency_wait_s: float = Field(300.0, description="how long ingest waits for a down encoder or store before it gives up")
    triton_url: str = Field("localhost:8001", description="Triton's gRPC address")
    triton_timeout_s: float = Field(30.0, description="deadline of one Triton request")
    triton_retry_s: float = Field(10.0, description="keep retrying a request this long while Triton is unavailable")
    triton_startup_wait_s: float = Field(30.0, description="wait this long for Triton and the models to be ready at start-up")


class BlobSettings(BaseModel):
    """Where the image files go: the images folder, or an S3-compatible bucket."""

    blobs: str = Field("", description="empty = the images folder in the data folder (IMAGESEARCH_DATA_DIR/images); "
                       "s3://bucket/prefix = an S3-compatible bucket, which every machine of a cluster reaches")
    s3_endpoint_url: str = Field("", description="the S3 API's address (SeaweedFS, Ceph, a cloud's S3-compatible service); "
                                 "empty = AWS S3 itself")
    s3_region: str = Field("", description="the bucket's region; empty = the AWS default chain's (or us-east-1)")
    s3_access_key_id: str = Field("", description="with IMAGESEARCH_S3_SECRET_ACCESS_KEY; empty = the AWS default chain "
                                  "(AWS_* variables, ~/.aws, an instance or pod role)")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="the secret of IMAGESEARCH_S3_ACCESS_KEY_ID")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="bucket in the path (http://host/bucket/key) or in the host name; auto = path with "
        "IMAGESEARCH_S3_ENDPOINT_URL (what most S3-compatible servers expect), virtual on AWS")
    s3_connections: int = Field(32, ge=1, description="connections to the S3 API per process (and image uploads at once "
                                "per write batch)")
    s3_timeout_s: float = Field(20.0, gt=0, description="longest wait for a connection, or silence while reading, "
                                "in one S3 request")

    @field_validator("blobs")
    @classmethod
    def _blobs(cls, value: str) -> str:
        if value and not (value.startswith("s3://") and value[5:].split("/")[0]):
            raise ValueError(f"IMAGESEARCH_BLOBS is empty (the images folder) or s3://bucket[/prefix], not {value!r}")
        return value


class DecodeSettings(BaseModel):
    """Image decoding."""

    max_image_pixels: int = Field(100_000_000, description="decompression-bomb guard (Pillow refuses over 178,956,970 "
                                  "pixels whatever this says)")
    jpeg_draft: bool = Field(True, description="DCT-domain JPEG downscaling while decoding")
    handoff_mb: int = Field(256, ge=0, description="`imagesearch ingest` (download and embed in one process): MiB of "
                            "pixels the download's verifying decode keeps for the embedder, so each image is decoded once; 0 = off")


class ThumbnailSettings(BaseModel):
    """Thumbnails: the small copies the web UI shows (GET /images/{id}/thumbnail)."""

    thumbnail_size: int = Field(320, ge=16, le=4096, description="a thumbnail's longest side in pixels (never larger than "
                                "the image); thumbnails already made keep their size")
    thumbnail_quality: int = Field(80, ge=1, le=100, description="the WebP quality thumbnails are encoded at (1-100)")


class StoreSettings(BaseModel):
    """The vector store: local (SQLite) or Elasticsearch."""

    store: Literal["local", "elasticsearch"] = Field("local", description="local: SQLite in the data folder; "
                                                     "elasticsearch: a node or cluster")
    local_index_min_vectors: int = Field(
        LOCAL_INDEX_MIN_VECTORS, ge=0, description="the local store searches a model exactly up to this many vectors; from there on through a "
        "saved HNSW graph index whose candidates are rescored exactly (not for BLIP-2's several vectors per image)")
    es_url: str = Field("http://localhost:9200", description="a node's URL, or several comma-separated (a cluster's nodes: "
                        "a request to a node that is down goes to the next)")
    es_username: str = Field("", description="basic authentication user (with IMAGESEARCH_ES_PASSWORD)")
    es_password: SecretStr = Field(SecretStr(""), description="basic authentication password")
    es_api_key: SecretStr = Field(SecretStr(""), description="an Elasticsearch API key (instead of user and password)")
    es_ca_certs: str = Field("", description="CA bundle for an https:// node with its own CA; empty = the system's CAs")
    es_index_prefix: str = Field("imagesearch", description="the start of every index name, so that several deployments "
                                 "can share one cluster")
    es_timeout_s: float = Field(10.0, description="a read's whole budget (a search: all its requests and retries); "
                                "a write's per request (bulk requests get 6x)")
    es_index_type: EsIndexType = Field(
        "int8_hnsw", description="dense_vector index_options type for new vector indices (bbq_hnsw needs dims >= 64)")
    es_hnsw_m: int = Field(16, ge=2, description="HNSW graph degree of new vector indices")
    es_hnsw_ef_construction: int = Field(100, ge=2, description="HNSW build-time candidate list of new vector indices")
    es_num_candidates: int = Field(
        1000, ge=1, le=MAX_K, description="kNN candidates per shard (at least k): more finds more of the true neighbours, "
        "slower (bench/bench_es.py measures the trade)")
    es_rescore_oversample: float = Field(
        2.0, ge=0, description="re-rank k x this many quantized hits with the float vectors (exact scores); 0 = off")
    es_shards: int = Field(1, ge=1, description="primary shards of new indices")
    es_replicas: int = Field(0, ge=0, description="replicas of new indices (0 suits a single node)")
    es_refresh_interval: str = Field("1s", description="refresh interval of new vector indices; raise (e.g. 30s) for big bulk loads")
    es_bulk_chunk: int = Field(500, ge=1, description="documents per bulk request")


class DownloadSettings(BaseModel):
    """The downloader (and the API's search by image URL)."""

    allow_private_networks: bool = Field(False, description="let the downloader fetch from private and loopback "
                                         "addresses (off: the SSRF guard refuses them)")
    download_allowed_networks: list[str] = Field(
        default_factory=list, description="addresses/networks (CIDR) the SSRF guard lets through, e.g. an intranet host")
    download_concurrency: int = Field(64, ge=1, description="requests in flight, all hosts together")
    download_per_host: int = Field(8, ge=1, description="requests in flight to one host")
    download_connect_timeout_s: float = Field(10.0, description="longest wait for a connection")
    download_read_timeout_s: float = Field(20.0, description="longest silence while reading an answer")
    download_total_timeout_s: float = Field(60.0, description="longest one attempt, redirects and body included")
    download_retries: int = Field(3, ge=0, description="extra attempts on timeouts, connection errors, 429, 5xx")
    download_backoff_s: float = Field(1.0, description="the first retry waits about this long, doubling with jitter")
    download_backoff_max_s: float = Field(30.0, description="the longest wait between two attempts")
    download_max_retry_after_s: float = Field(120.0, description="a longer Retry-After gives up instead of waiting")
    download_max_bytes: int = Field(25 * 1024 * 1024, description="largest image downloaded")
    download_max_redirects: int = Field(5, description="redirects followed per URL")
    download_user_agent: str = Field(f"imagesearch/{__version__} (+{HOMEPAGE})", description="the User-Agent sent")
    download_honour_noai: bool = Field(True, description="skip images served with X-Robots-Tag: noai / noimageai")
    download_obey_robots: bool = Field(True, description="obey each host's robots.txt (Disallow, Crawl-delay); "
                                       "turn off only for sources you own")
    download_write_batch: int = Field(64, ge=1, description="records per store write, for URL lists and folders "
                                      "(a kill loses at most a few of these)")

    @field_validator("download_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad entry
        return value


class RaySettings(BaseModel):
    """`imagesearch ingest --ray ADDRESS`: the ingest as a Ray Data pipeline on a Ray cluster."""

    ray_host_partitions: int = Field(0, ge=0, description="parts a URL list is split into by host, each downloaded by "
                                     "one task at a time (so each host's politeness holds cluster-wide); 0 = 4 per CPU "
                                     "of the cluster")
    ray_download_cpus: float = Field(0.5, gt=0, description="CPUs each download task reserves (it mostly waits on "
                                     "the network; its CPU goes to checking that each image decodes)")
    ray_embedders: int = Field(0, ge=0, description="embed actors, each holding the model; 0 = one per GPU of the cluster "
                               "(or one, on CPUs only or with Triton)")
    ray_embed_cpus: float = Field(1.0, gt=0, description="CPUs each embed actor reserves (its encoder uses "
                                  "IMAGESEARCH_ONNX_THREADS threads)")
    ray_embed_round: int = Field(100_000, ge=1, description="`ingest embed --ray`: pending images read from the store "
                                 "per round (the driver holds their ids)")


class ServiceSettings(BaseModel):
    """The API and the web UI."""

    api_url: str = Field("http://localhost:8000", description="where the UI finds the API")
    api_host: str = Field("127.0.0.1", description="address the API listens on")
    api_port: int = Field(8000, description="port the API listens on")
    api_keys: SecretStr = Field(SecretStr(""), description="keys that may search and read (comma-separated); "
                                "none set, nor admin keys nor a keys file: the API is open")
    admin_api_keys: SecretStr = Field(SecretStr(""), description="keys that may also change the index (comma-separated)")
    api_keys_file: Path | None = Field(None, description="more keys, hashed: lines '<read|admin> <sha256 hex of the key>'")
    api_key: SecretStr = Field(SecretStr(""), description="the key the web UI sends to the API")
    api_docs_open: bool = Field(False, description="with API keys configured, let /docs, /redoc and /openapi.json answer "
                                "without a key (off: they need a read key, like every route but /healthz and /metrics)")
    search_rate_per_s: float = Field(
        20.0, ge=0, description="searches by text or by an indexed image that one client (an API key, or an address when "
        "the API has no keys) may make per second, sustained; over it: 429 with Retry-After; 0 = no limit")
    search_burst: int = Field(40, ge=1, description="searches one client may make at once before the rate applies")
    upload_rate_per_s: float = Field(
        5.0, ge=0, description="searches by an uploaded image or an image_url (each encodes an image) that one client may "
        "make per second, sustained; 0 = no limit")
    upload_burst: int = Field(10, ge=1, description="image searches one client may make at once before the rate applies")
    ui_host: str = Field("127.0.0.1", description="address the web UI listens on")
    ui_port: int = Field(8501, description="port the web UI listens on")
    max_k: int = Field(100, ge=1, le=MAX_K, description="largest k a search may ask for (the API, the CLI and the UI)")
    sort_window: int = Field(
        1000, ge=1, le=MAX_K, description="sort=newest|oldest orders the best this many matches by relevance by their date "
        "(those without a date after them); pages of a date-sorted search end there")
    max_query_chars: int = Field(1000, ge=1, description="longest query text accepted")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest image a search may upload or fetch")
    text_cache_size: int = Field(4096, ge=0, description="text embeddings kept for repeated queries (LRU)")
    text_batch_max: int = Field(32, ge=1, description="most texts encoded in one micro-batch")
    text_batch_wait_ms: float = Field(2.0, ge=0, description="how long a query waits for others to share its encoder call")
    url_fetch_timeout_s: float = Field(15.0, gt=0, description="search by image_url: time limit for the fetch")
    negative_weight: float = Field(
        0.5, ge=0, le=10, description="a query with negatives (texts or images to steer away from) searches with the "
        "normalized mean of its positives minus this times the mean of its negatives (docs/api.md says why this default)")
    max_query_examples: int = Field(
        16, ge=1, le=1000, description="most negative texts, and most positive_ids and negative_ids, one search may give (each)")
    duplicate_threshold: float = Field(
        0.95, ge=0.5, le=1.0, description="near-duplicates (`imagesearch duplicates`, GET /duplicates, collapse=true): "
        "images whose vectors' cosine is at least this; the default of their threshold parameter")
    duplicate_neighbours: int = Field(
        16, ge=1, le=1000, description="the near-duplicate search looks at each image's this many nearest neighbours: a "
        "larger group is found whole as long as its members' neighbours chain together")


class TagSettings(BaseModel):
    """Tags: zero-shot labels each image is given at ingest."""

    tagging: bool = Field(True, description="give each image the labels of the tag vocabulary that fit it best, at ingest, "
                          "with the default model (the first of IMAGESEARCH_MODELS); off: no new tags (those given stay)")
    tag_vocabulary: Path | None = Field(None, description="a file of labels, one per line (# comments); empty = the "
                                        "vocabulary shipped with imagesearch (a few hundred everyday labels)")
    tag_template: str = Field("a photo of a {label}", description="how each label is put to the text encoder ({label} "
                              "is replaced by it)")
    tags_per_image: int = Field(5, ge=1, le=50, description="the most labels one image keeps")
    tag_min_score: float = Field(
        3.0, description="a label fits an image when it scores this many standard deviations above the image's mean score "
        "over the vocabulary (3 suits a vocabulary of hundreds of labels; lower it for a few dozen)")

    @field_validator("tag_vocabulary", mode="before")
    @classmethod
    def _no_vocabulary(cls, value):
        return None if value == "" else value  # empty (as in .env.example): the shipped one, not the current folder

    @field_validator("tag_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{label}" not in value:
            raise ValueError("the tag template must contain {label}, e.g. 'a photo of a {label}'")
        return value


class RunSettings(BaseModel):
    """`make run` (imagesearch.run): what it exports and ingests."""

    arch: str = Field(DEFAULT_MODEL, description="open_clip architecture that `make run` exports if missing")
    pretrained: str = Field(DEFAULT_PRETRAINED, description="its pretrained tag or a local checkpoint path")
    arch_config: Path | None = Field(None, description="open_clip model config (JSON file or folder) of a custom architecture")
    urls_file: Path = Field(Path("data/image_urls.txt"), description="URL list `make run` ingests if present")
    images_folder: Path = Field(Path("data/images"), description="folder `make run` ingests if present")

    @field_validator("arch_config", mode="before")
    @classmethod
    def _no_arch_config(cls, value):
        return None if value == "" else value  # empty (as in .env.example): none, not the current folder


SECTIONS: tuple[type[BaseModel], ...] = (PathSettings, BlobSettings, ModelSettings, DecodeSettings, ThumbnailSettings,
                                         StoreSettings, DownloadSettings, RaySettings, ServiceSettings, TagSettings,
                                         RunSettings)


class Settings(PathSettings, BlobSettings, ModelSettings, DecodeSettings, ThumbnailSettings, StoreSettings,
               DownloadSettings, RaySettings, ServiceSettings, TagSettings, RunSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_", env_file=None, extra="ignore")

    @property
    def model_slugs(self) -> list[str]:
        """The models to embed with and serve, the default first ("" = the only/first one exported)."""
        return [slug.strip() for slug in self.models.split(",") if slug.strip()] or [self.model]

    def for_model(self, slug: str) -> Settings:
        """These settings with ``slug`` as the model (what one encoder and its search service read)."""
        return self.model_copy(update={"model": slug})

    @property
    def es_urls(self) -> list[str]:
        return [url.strip() for url in self.es_url.split(",") if url.strip()]

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
