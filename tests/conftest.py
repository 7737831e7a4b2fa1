"""Settings shared by every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep compiled modules of the plugins that tests start out of the machine's cache.

    Plugins started by tests inherit the variable, so `wasmtime-driver run`
    and the conformance client never write to the default location.
    """
    path = tmp_path_factory.mktemp("module-cache")
    previous = os.environ.get("WASMTIME_DRIVER_CACHE_DIR")
    os.environ["WASMTIME_DRIVER_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        del os.environ["WASMTIME_DRIVER_CACHE_DIR"]
    else:
        os.environ["WASMTIME_DRIVER_CACHE_DIR"] = previous
