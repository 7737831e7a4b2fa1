from __future__ import annotations

import threading

import pytest
import wasmtime

from wasmtime_driver.engine import (
    ENGINE_SETTINGS,
    STOPPED_MESSAGE,
    Interrupt,
    TaskInterrupted,
    create_engine,
    create_store,
    engine_fingerprint,
)

SPIN = '(module (func (export "spin") (loop br 0)))'
JOIN_TIMEOUT = 10.0  # seconds; only guards against a hung test


class SpinningTask:
    """Run the `spin` export in a thread and record how it ended."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module) -> None:
        self.interrupt = Interrupt()
        self.started = threading.Event()
        self.error: Exception | None = None
        self._engine = engine
        self._module = module
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        store = create_store(self._engine, self.interrupt)
        instance = wasmtime.Instance(store, self._module, [])
        spin = instance.exports(store)["spin"]
        assert isinstance(spin, wasmtime.Func)
        self.started.set()
        try:
            spin(store)
        except Exception as err:  # noqa: BLE001 - recorded for the test to check
            self.error = err


def test_interrupt_stops_only_its_store() -> None:
    engine = create_engine()
    module = wasmtime.Module(engine, SPIN)
    first = SpinningTask(engine, module)
    second = SpinningTask(engine, module)
    assert first.started.wait(JOIN_TIMEOUT)
    assert second.started.wait(JOIN_TIMEOUT)

    first.interrupt.request()
    first.thread.join(JOIN_TIMEOUT)

    assert not first.thread.is_alive()
    assert STOPPED_MESSAGE in str(first.error)
    assert second.thread.is_alive()
    assert not second.interrupt.requested

    second.interrupt.request()
    second.thread.join(JOIN_TIMEOUT)
    assert not second.thread.is_alive()
    assert STOPPED_MESSAGE in str(second.error)


def test_interrupt_survives_other_epoch_increments() -> None:
    engine = create_engine()
    module = wasmtime.Module(engine, SPIN)
    task = SpinningTask(engine, module)
    assert task.started.wait(JOIN_TIMEOUT)

    for _ in range(100):
        engine.increment_epoch()
    task.thread.join(0.05)
    assert task.thread.is_alive()

    task.interrupt.request()
    task.thread.join(JOIN_TIMEOUT)
    assert not task.thread.is_alive()


def test_create_store_requested_interrupt() -> None:
    interrupt = Interrupt()
    interrupt.request()
    assert interrupt.requested
    with pytest.raises(TaskInterrupted, match="task stopped"):
        create_store(create_engine(), interrupt)


def test_create_store_runs_normal_code() -> None:
    engine = create_engine()
    store = create_store(engine, Interrupt())
    module = wasmtime.Module(
        engine,
        '(module (func (export "count") (result i32) (local i32)'
        " (loop (local.set 0 (i32.add (local.get 0) (i32.const 1)))"
        " (br_if 0 (i32.lt_u (local.get 0) (i32.const 100000))))"
        " (local.get 0)))",
    )
    instance = wasmtime.Instance(store, module, [])
    count = instance.exports(store)["count"]
    assert isinstance(count, wasmtime.Func)
    engine.increment_epoch()
    assert count(store) == 100000


def test_engine_settings_enable_epochs() -> None:
    assert ENGINE_SETTINGS["epoch_interruption"] is True


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        ('(module (func (export "f") (param anyref)))', "gc feature"),
        ('(module (func (export "f") (param exnref)))', "exception"),
    ],
    ids=["anyref", "exnref"],
)
def test_create_engine_rejects_unreadable_types(wat: str, message: str) -> None:
    with pytest.raises(wasmtime.WasmtimeError, match=message):
        wasmtime.Module(create_engine(), wat)


def test_engine_fingerprint_stable_hex() -> None:
    first = engine_fingerprint()
    assert first == engine_fingerprint()
    assert len(first) == 64
    int(first, 16)
