"""Idle resident memory of the plugin, on its first start and after a restart.

Run from the repository root, after `make build`:

    .venv/bin/python bench/bench_idle_rss.py

Each start sends SetConfig as a Nomad client does, reads the first
fingerprint (which runs the health check), waits half a second and reads
VmRSS from /proc. The first start on an empty cache directory compiles the
health check module. A restart deserializes it, as a real agent's restarts
do once the cache directory exists.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from plugin_harness import configure, iterate, start_plugin

from wasmtime_driver.protocol import driver_pb2

SETTLE_SECONDS = 0.5


def idle_rss_kib(cache_dir: Path) -> int:
    plugin = start_plugin()
    try:
        configure(plugin, {"dir": str(cache_dir)})
        stream = plugin.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=30)
        next(iterate(stream, 1))
        time.sleep(SETTLE_SECONDS)
        status = Path(f"/proc/{plugin.process.pid}/status").read_text()
    finally:
        plugin.shutdown()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as work:
        cache_dir = Path(work)
        first = idle_rss_kib(cache_dir)
        restarted = idle_rss_kib(cache_dir)
    print("| start | idle RSS |")
    print("|---|---|")
    for label, kib in (("first, empty cache", first), ("restart", restarted)):
        print(f"| {label} | {kib / 1024:.1f} MiB = {kib * 1024 / 1e6:.1f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
