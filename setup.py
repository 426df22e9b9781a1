"""Installs the shared core and the service folders under one namespace: ``api/`` becomes
``imagesearch.api`` (and ``export/``, ``ingest/``, ``ui/`` likewise), so nothing lands in
site-packages under a generic name. The folders stay at the top level, where the design puts them.
A service folder that is absent is left out: the runtime image is built without ``export/``
(which needs torch). Everything else about the package is in pyproject.toml."""

from pathlib import Path

from setuptools import find_packages, setup

SERVICES = ("export", "ingest", "api", "ui")
present = [name for name in SERVICES if (Path(__file__).parent / name / "__init__.py").is_file()]

setup(
    packages=find_packages(include=["imagesearch", "imagesearch.*"])
    + [f"imagesearch.{name}{'.' + sub if sub else ''}" for name in present for sub in ["", *find_packages(name)]],
    package_dir={f"imagesearch.{name}": name for name in present},
)
