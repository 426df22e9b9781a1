"""The one settings class every service reads (environment variables prefixed ``IMAGESEARCH_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_", env_file=None, extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Path("./var")
    model_repository: Path = Path("./model_repository")

    # --- model and encoder -------------------------------------------------------------------
    model: str = Field("", description="active model slug; empty = the only/first model in the repository")
    model_variant: Literal["fp32", "fp16", "int8"] = "fp32"
    encoder: Literal["onnx", "triton"] = "onnx"
    onnx_threads: int = Field(0, description="intra-op threads for ONNX Runtime; 0 = all cores")
    onnx_providers: str = Field("", description="comma-separated ORT providers; empty = CUDA if present, else CPU")
    batch_size: int = 32
    triton_url: str = "localhost:8001"
    triton_timeout_s: float = 30.0

    # --- image decoding ----------------------------------------------------------------------
    max_image_pixels: int = Field(100_000_000, description="decompression-bomb guard")
    jpeg_draft: bool = Field(True, description="DCT-domain JPEG downscaling while decoding")

    # --- vector store ------------------------------------------------------------------------
    store: Literal["local", "elasticsearch"] = "local"
    es_url: str = "http://localhost:9200"
    es_username: str = ""
    es_password: SecretStr = SecretStr("")
    es_api_key: SecretStr = SecretStr("")
    es_ca_certs: str = ""
    es_index_prefix: str = "imagesearch"

    # --- downloader --------------------------------------------------------------------------
    allow_private_networks: bool = False

    # --- services ----------------------------------------------------------------------------
    api_url: str = "http://localhost:8000"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    ui_host: str = "127.0.0.1"
    ui_port: int = 8501

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
