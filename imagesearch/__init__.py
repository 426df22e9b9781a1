"""imagesearch: the shared core (settings, model description, preprocessing, tokenizer, encoders, stores)."""

__version__ = "0.1.0"
