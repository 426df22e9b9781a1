"""imagesearch: the shared core (settings, model description, preprocessing, tokenizer, encoders, stores)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imagesearch")  # pyproject.toml says it once
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
