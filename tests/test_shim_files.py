"""The start and result files that the plugin and a task's shim exchange."""

from __future__ import annotations

from pathlib import Path

from wasmtime_driver.handle import ExitResult, TaskRequest
from wasmtime_driver.settings import CacheSettings, ExpirationSettings
from wasmtime_driver.shim_files import (
    ShimStart,
    read_result,
    read_start,
    task_file_stem,
    write_result,
    write_start,
)


def test_start_file_round_trip(tmp_path: Path) -> None:
    request = TaskRequest(
        id="alloc/task/1",
        name="task",
        alloc_id="alloc",
        job_name="job",
        task_group_name="group",
        alloc_dir=tmp_path / "alloc",
        stdout_path="/dev/null",
        stderr_path="/dev/null",
        env={"A": "1"},
        driver_config=b"\x81\xa1k\xa1v",
        memory_limit_bytes=1 << 20,
    )
    cache = CacheSettings(type="arc", size=3, expiration=ExpirationSettings(False, 5))
    start = ShimStart(request, cache, tmp_path / "c", tmp_path, tmp_path / "r")
    write_start(tmp_path / "start", start)

    read = read_start(tmp_path / "start")
    assert read.request.id == request.id
    assert read.request.env == {"A": "1"}
    assert read.request.driver_config == request.driver_config
    assert read.request.memory_limit_bytes == 1 << 20
    assert read.request.task_dir == tmp_path / "alloc" / "task"
    assert read.cache == cache
    assert read.cache_dir == tmp_path / "c"
    assert read.result_path == tmp_path / "r"


def test_result_file_round_trip(tmp_path: Path) -> None:
    result = ExitResult(exit_code=300, signal=0, err="module failed")
    write_result(tmp_path / "result", result)
    assert read_result(tmp_path / "result") == result
    assert list(tmp_path.iterdir()) == [tmp_path / "result"]


def test_result_file_missing_or_corrupt(tmp_path: Path) -> None:
    assert read_result(tmp_path / "missing") is None
    (tmp_path / "corrupt").write_bytes(b"\xc1")
    assert read_result(tmp_path / "corrupt") is None
    (tmp_path / "list").write_bytes(b"\x91\x01")
    assert read_result(tmp_path / "list") is None


def test_task_file_stem_hashes_id(tmp_path: Path) -> None:
    stem = task_file_stem(tmp_path, "alloc/task/1")
    assert stem.parent == tmp_path
    assert "/" not in stem.name
    assert stem != task_file_stem(tmp_path, "alloc/task/2")
