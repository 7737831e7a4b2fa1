"""jobspec: reading Nomad job files into tasks and config maps."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from wasmtime_driver import hcldec, jobspec
from wasmtime_driver.ctymsgpack import marshal
from wasmtime_driver.hclspec import spec_from_protojson
from wasmtime_driver.jobspec import JobFileError, load_job, parse_job, tasks_for_driver

REPO = Path(__file__).resolve().parents[1]
VECTORS = json.loads(
    (Path(__file__).parent / "data" / "cty-msgpack.json").read_text(encoding="utf-8")
)

FULL_JOB = """
job "demo" {
  name        = "Demo job"
  datacenters = ["dc1", "dc2"]
  type        = "batch"

  group "g" {
    count = 2

    task "wasm" {
      driver       = "wasmtime"
      kill_timeout = "1m30s"
      kill_signal  = "SIGTERM"

      config {
        modulePath = "${NOMAD_TASK_DIR}/m.wasm"
        main {
          mainFuncName = "run"
          args         = [0.1, 12345678901234567890123, 1e20, -3]
        }
        options = { level = 2, nested = { x = 1 } }
        items   = [{ a = 1 }, { b = 2 }]
        route "api" "v1" {
          port = 80
        }
        script = <<-EOT
          line one
            line two
          EOT
      }

      env {
        FOO = "bar"
        DIR = "${NOMAD_ALLOC_DIR}/x"
      }

      meta {
        owner = "ops"
      }

      resources {
        cpu        = 250
        memory     = 64
        memory_max = 128
      }

      logs {
        disabled = true
      }
    }

    task "other" {
      driver = "exec"
      config {
        command = "/bin/true"
      }
    }
  }
}
"""


def write_job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.nomad"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_job_example_sum() -> None:
    job = load_job(REPO / "example" / "job" / "sum.nomad")

    ((group, task),) = tasks_for_driver(job, "wasmtime")

    assert job.id == "sum"
    assert job.type == "batch"
    assert job.datacenters == ("dc1",)
    assert group.name == "sum"
    assert task.name == "sum"
    assert task.config == {
        "modulePath": "example/wasm-modules/sum.wasm",
        "main": [{"mainFuncName": "sum", "args": [123456, 678910]}],
    }


def test_load_job_example_sum_encodes_like_go_cty() -> None:
    vector = next(v for v in VECTORS["vectors"] if v["name"] == "task_config_example")
    spec = spec_from_protojson(VECTORS["specs"]["wasm-task-config"]["protojson"])
    ((_, task),) = tasks_for_driver(
        load_job(REPO / "example" / "job" / "sum.nomad"), "wasmtime"
    )

    value = hcldec.decode(spec, task.config, hcldec.task_variables({}))

    assert marshal(value).hex() == vector["hex"]


def test_load_job_task_fields(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, FULL_JOB))

    ((group, task),) = tasks_for_driver(job, "wasmtime")

    assert job.name == "Demo job"
    assert job.datacenters == ("dc1", "dc2")
    assert group.count == 2
    assert task.kill_timeout_s == 90.0
    assert task.kill_signal == "SIGTERM"
    assert task.env == {"FOO": "bar", "DIR": "${NOMAD_ALLOC_DIR}/x"}
    assert task.meta == {"owner": "ops"}
    assert task.resources == jobspec.Resources(250, 64, 128)
    assert task.logs_disabled is True


def test_load_job_config_shape(tmp_path: Path) -> None:
    ((_, task),) = tasks_for_driver(load_job(write_job(tmp_path, FULL_JOB)), "wasmtime")

    assert task.config is not None
    assert task.config["modulePath"] == "${NOMAD_TASK_DIR}/m.wasm"
    assert task.config["options"] == [{"level": 2, "nested": {"x": 1}}]
    assert task.config["items"] == [{"a": 1}, {"b": 2}]
    assert task.config["route"] == [{"api": [{"v1": [{"port": 80}]}]}]
    assert task.config["script"] == "line one\n  line two\n"


def test_load_job_config_numbers_exact(tmp_path: Path) -> None:
    ((_, task),) = tasks_for_driver(load_job(write_job(tmp_path, FULL_JOB)), "wasmtime")

    assert task.config is not None
    args = task.config["main"][0]["args"]
    assert args == [Decimal("0.1"), 12345678901234567890123, Decimal("1e20"), -3]
    assert isinstance(args[0], Decimal)


def test_load_job_defaults(tmp_path: Path) -> None:
    text = 'job "j" {\n group "g" {\n task "t" {\n driver = "wasmtime"\n }\n }\n}\n'

    job = load_job(write_job(tmp_path, text))
    task = job.groups[0].tasks[0]

    assert job.name == "j"
    assert job.type == "service"
    assert task.config is None
    assert task.kill_timeout_s == 5.0
    assert task.kill_signal == ""
    assert task.resources == jobspec.Resources(cpu_mhz=100, memory_mb=300)
    assert task.logs_disabled is False
    assert task.env == {}


def test_load_job_empty_config_is_null(tmp_path: Path) -> None:
    text = (
        'job "j" {\n group "g" {\n task "t" {\n driver = "x"\n config {}\n }\n }\n}\n'
    )

    task = load_job(write_job(tmp_path, text)).groups[0].tasks[0]

    assert task.config is None


def test_tasks_for_driver_filters(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, FULL_JOB))

    assert [task.name for _, task in tasks_for_driver(job, "exec")] == ["other"]
    assert tasks_for_driver(job, "docker") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('job "j" {', "failed to parse"),
        ('group "g" {}\n', "expected exactly one job block"),
        ('job "j" {}\n', "has no group block"),
        ('job "j" {\n group "g" {}\n}\n', "group 'g' has no task block"),
        ('job "j" {\n group "g" {\n task "t" {}\n }\n}\n', "driver is missing"),
        (
            (
                'job "j" {\n group "g" {\n task "t" {\n driver = "x"\n'
                ' kill_timeout = "soon"\n }\n }\n}\n'
            ),
            "invalid duration 'soon'",
        ),
        (
            (
                'job "j" {\n group "g" {\n task "t" {\n driver = "x"\n'
                ' resources {\n cpu = "fast"\n }\n }\n }\n}\n'
            ),
            "cpu = 'fast' is invalid: expected int",
        ),
    ],
)
def test_load_job_invalid(tmp_path: Path, text: str, message: str) -> None:
    path = write_job(tmp_path, text)

    with pytest.raises(JobFileError, match=message) as caught:
        load_job(path)

    assert str(path) in str(caught.value)


def test_load_job_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="failed to read job file .*nope.nomad"):
        load_job(tmp_path / "nope.nomad")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m", 60.0), ("1h2m3s", 3723.0), ("250ms", 0.25), ("0", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert jobspec.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "1x", "1s2"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(JobFileError, match="invalid duration"):
        jobspec.parse_duration(text)


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS["vectors"] if v["input_format"] == "hcl"],
    ids=lambda v: v["name"],
)
def test_parse_config_body_matches_nomad_json(vector: dict[str, Any]) -> None:
    expected = json.loads(vector["nomad_json"], parse_float=Decimal)

    assert jobspec.parse_config_body(vector["input"]) == expected


def test_parse_job_config_object_attribute_wrapped() -> None:
    text = (
        'job "j" {\n group "g" {\n task "t" {\n driver = "x"\n'
        ' config {\n main = { mainFuncName = "f" }\n }\n }\n }\n}\n'
    )

    task = parse_job(text).groups[0].tasks[0]

    assert task.config == {"main": [{"mainFuncName": "f"}]}
