"""The driver's health check and its stored compiled module."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmtime_driver.engine import create_engine, engine_fingerprint
from wasmtime_driver.health import HealthCheck


def test_health_check_passes_without_storage() -> None:
    check = HealthCheck(create_engine(), engine_fingerprint(), None)
    assert check.run() == (True, "Healthy")


def test_health_check_stores_compiled_module(tmp_path: Path) -> None:
    engine = create_engine()
    assert HealthCheck(engine, engine_fingerprint(), tmp_path).run()[0]
    stored = list(tmp_path.glob("health-*.cwasm"))
    assert len(stored) == 1


def test_health_check_reuses_stored_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine()
    HealthCheck(engine, engine_fingerprint(), tmp_path).run()

    def no_compile(self: HealthCheck) -> None:
        raise AssertionError("the stored module should have been used")

    monkeypatch.setattr(HealthCheck, "_compile", no_compile)
    assert HealthCheck(create_engine(), engine_fingerprint(), tmp_path).run() == (
        True,
        "Healthy",
    )


def test_health_check_replaces_damaged_module(tmp_path: Path) -> None:
    engine = create_engine()
    HealthCheck(engine, engine_fingerprint(), tmp_path).run()
    (stored,) = tmp_path.glob("health-*.cwasm")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    assert HealthCheck(engine, engine_fingerprint(), tmp_path).run()[0]
    assert stored.exists() is False or stored.read_bytes() != bytes(data)
    assert len(list(tmp_path.glob("health-*.cwasm"))) == 1


def test_health_check_unwritable_dir_still_passes(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    check = HealthCheck(create_engine(), engine_fingerprint(), blocked / "health")
    assert check.run() == (True, "Healthy")
