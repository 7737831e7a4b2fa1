"""The shared wasmtime engine, its settings fingerprint, and per-task stopping.

Stopping uses epoch interruption. Every store created by `create_store` has an
epoch deadline of one tick and a deadline callback bound to its task's
`Interrupt`. `Interrupt.request` sets the task's flag and then increments the
engine epoch once, so every store that is running wasm reaches its deadline at
its next loop header or function entry. Its callback then either extends the
deadline by one tick (the flag of another task) or returns an error, which
wasmtime raises as a trap in that store alone. No ticker thread runs, and a
stop takes effect well under a millisecond after `request` while the task is
in wasm code.

NOTE: a task blocked inside a host call (a WASI write to a full pipe, a WASI
`poll_oneoff` sleep) only notices the stop when the call returns to wasm.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import json
import platform
import threading
from collections.abc import Mapping
from importlib import metadata
from types import MappingProxyType
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from .errors import TaskError

# Every wasmtime Config setting the driver sets, applied in this order by
# `create_engine`. Unlisted settings keep wasmtime's defaults, which the
# wasmtime version in `engine_fingerprint` pins.
#
# SIMD and relaxed SIMD are on, so modules built with -msimd128 run.
# wasmtime-py 50 aborts the whole process (a Rust panic across the C API) when
# Python reads a v128 in a function's type, so the driver reads exported
# signatures from the module file (`wasmbinary`) and rejects a call with a
# v128 parameter or result before wasmtime reads its type.
#
# GC, typed function references, exception handling and stack switching stay
# off. They add reference types (anyref, exnref, typed references) that
# wasmtime-py 50 may not model either, and the driver was only checked for
# v128, so such modules fail to compile with a clear message instead.
# GC must be disabled before typed function references, or wasmtime rejects
# the combination.
ENGINE_SETTINGS: Mapping[str, bool | str] = MappingProxyType(
    {
        "epoch_interruption": True,
        "cranelift_opt_level": "speed",
        "wasm_simd": True,
        "wasm_relaxed_simd": True,
        "wasm_gc": False,
        "wasm_function_references": False,
        "wasm_exceptions": False,
        "wasm_stack_switching": False,
    }
)

STOPPED_MESSAGE = "task stopped"


class TaskInterrupted(TaskError):
    """A task ended because its `Interrupt` was requested."""

    def __init__(self) -> None:
        super().__init__(STOPPED_MESSAGE)


def create_engine() -> wasmtime.Engine:
    """Create an engine with `ENGINE_SETTINGS` applied."""
    config = wasmtime.Config()
    for name, value in ENGINE_SETTINGS.items():
        setattr(config, name, value)
    return wasmtime.Engine(config)


def wasmtime_version() -> str:
    """Return the installed wasmtime-py version, which matches its C library."""
    return metadata.version("wasmtime")


# Cached because reading the package metadata takes milliseconds, and the
# installed version cannot change under a running process.
@functools.cache
def engine_fingerprint() -> str:
    """Return a hex SHA-256 of everything that decides the compiled machine code.

    It covers the wasmtime version, `ENGINE_SETTINGS` and the host
    architecture. Host CPU features are not included because
    `Module.deserialize` checks them itself and raises on a mismatch.
    """
    identity = {
        "wasmtime": wasmtime_version(),
        "machine": platform.machine(),
        "settings": dict(ENGINE_SETTINGS),
    }
    encoded = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


class Interrupt:
    """A stop request for one task, safe to request from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._engine: wasmtime.Engine | None = None

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        """Ask the task to stop; a running store traps at its next epoch check."""
        with self._lock:
            self._requested = True
            engine = self._engine
        if engine is not None:
            engine.increment_epoch()

    def _attach(self, engine: wasmtime.Engine) -> None:
        # The lock orders this against `request`: either `request` sees the
        # engine and increments its epoch, or the flag is already set when
        # `create_store` checks it after attaching.
        with self._lock:
            self._engine = engine


# Interrupts of live stores, keyed by the integer passed to wasmtime as the
# callback's data pointer. The GIL makes each dict operation atomic, and the
# store's finalizer removes its entry.
_WATCHED: dict[int, Interrupt] = {}
_KEYS = itertools.count(1)

_DeadlineCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_UPDATE_DEADLINE_CONTINUE = 0


def _on_deadline(context: Any, data: int | None, delta: Any, update_kind: Any) -> int:
    # Runs on the thread executing wasm, with the GIL taken by ctypes. It must
    # not raise: ctypes would print the exception and return 0 (continue).
    interrupt = _WATCHED.get(data or 0)
    if interrupt is not None and interrupt.requested:
        error = ffi.wasmtime_error_new(STOPPED_MESSAGE.encode())
        address: int = ctypes.cast(error, ctypes.c_void_p).value or 0
        return address
    delta[0] = 1
    update_kind[0] = _UPDATE_DEADLINE_CONTINUE
    return 0


def _on_store_deleted(data: int | None) -> None:
    _WATCHED.pop(data or 0, None)


# Module-level so that the C function pointers live as long as the process,
# which outlives every store that refers to them.
_DEADLINE_CALLBACK = _DeadlineCallback(_on_deadline)
_FINALIZER = _Finalizer(_on_store_deleted)


def create_store(engine: wasmtime.Engine, interrupt: Interrupt) -> wasmtime.Store:
    """Create a store that traps with `STOPPED_MESSAGE` once `interrupt` is requested.

    Raises `TaskInterrupted` when the interrupt was requested already.
    """
    store = wasmtime.Store(engine)
    key = next(_KEYS)
    _WATCHED[key] = interrupt
    ffi.wasmtime_store_epoch_deadline_callback(
        store.ptr(), _DEADLINE_CALLBACK, key, _FINALIZER
    )
    store.set_epoch_deadline(1)
    interrupt._attach(engine)
    if interrupt.requested:
        raise TaskInterrupted()
    return store
