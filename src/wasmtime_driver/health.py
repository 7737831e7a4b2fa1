"""The driver's health check: compile, instantiate and call a tiny module.

The fingerprint reports the driver healthy only when this check passes with
the engine that runs tasks. The compiled check module is kept in memory, and
stored beside the module cache so that a restarted plugin deserializes it
instead of compiling: an idle plugin then never loads the compiler, which
saves about 8 MiB of resident memory.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import wasmtime

from .atomicfile import write_atomically
from .engine import Interrupt, create_store

log = logging.getLogger(__name__)

HEALTH_CHECK_WAT = """
(module (func (export "add") (param i32 i32) (result i32)
  local.get 0 local.get 1 i32.add))
"""


class HealthCheck:
    """Runs the check; `artifact_dir` None keeps the compiled module in memory only."""

    def __init__(
        self, engine: wasmtime.Engine, fingerprint: str, artifact_dir: Path | None
    ) -> None:
        self._engine = engine
        self._fingerprint = fingerprint
        self._artifact_dir = artifact_dir
        self._module: wasmtime.Module | None = None

    def run(self) -> tuple[bool, str]:
        """Return whether the engine computed 2 + 3, and a description."""
        try:
            store = create_store(self._engine, Interrupt())
            instance = wasmtime.Instance(store, self._load(), [])
            add = instance.exports(store)["add"]
            assert isinstance(add, wasmtime.Func)
            result = add(store, 2, 3)
        except (wasmtime.WasmtimeError, wasmtime.Trap, AssertionError) as err:
            return False, f"wasmtime engine failed its check: {err}"
        if result != 5:
            return False, f"wasmtime engine computed 2 + 3 = {result}"
        return True, "Healthy"

    def _load(self) -> wasmtime.Module:
        if self._module is None:
            self._module = self._load_stored() or self._compile()
        return self._module

    def _load_stored(self) -> wasmtime.Module | None:
        if self._artifact_dir is None:
            return None
        prefix = f"health-{self._fingerprint[:16]}-"
        for path in self._artifact_dir.glob(f"{prefix}*.cwasm"):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            # The name carries the content's digest: deserializing damaged
            # machine code could crash the plugin instead of failing a check.
            if path.stem == prefix + hashlib.sha256(data).hexdigest():
                return wasmtime.Module.deserialize(self._engine, data)
            path.unlink(missing_ok=True)
        return None

    def _compile(self) -> wasmtime.Module:
        module = wasmtime.Module(self._engine, HEALTH_CHECK_WAT)
        if self._artifact_dir is not None:
            self._store(bytes(module.serialize()))
        return module

    def _store(self, data: bytes) -> None:
        assert self._artifact_dir is not None
        digest = hashlib.sha256(data).hexdigest()
        name = f"health-{self._fingerprint[:16]}-{digest}.cwasm"
        try:
            self._artifact_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self._artifact_dir / name, data)
        except OSError as err:
            log.debug("cannot store the health check module", extra={"error": str(err)})
