"""The search API (FastAPI): a thin HTTP shell over ``imagesearch.search.SearchService``."""

from imagesearch.api.app import create_app

__all__ = ["create_app"]
