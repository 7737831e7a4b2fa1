"""Whole-file writes that readers see complete or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmtime_driver.atomicfile import write_atomically


def test_write_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old")
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("a directory cannot be replaced by a file")
    with pytest.raises(OSError):
        write_atomically(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
