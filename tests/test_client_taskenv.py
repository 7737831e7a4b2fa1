"""Tests for the task environment and TaskConfig the run command sends."""

from __future__ import annotations

import re
from pathlib import Path

from wasmtime_driver.client.agentconfig import AgentConfig
from wasmtime_driver.client.allocdir import AllocDir
from wasmtime_driver.client.taskenv import (
    Allocation,
    build_task_config,
    interpolate,
    task_environment,
)
from wasmtime_driver.jobspec import parse_job

JOB = """
job "sum" {
  group "calc" {
    task "add" {
      driver = "wasmtime"
      env {
        GREETING = "hi from ${NOMAD_TASK_NAME}"
        UNKNOWN  = "${node.unique.id}"
      }
      resources {
        cpu    = 250
        memory = 64
      }
      config {
        modulePath = "sum.wasm"
      }
    }
  }
}
"""


def _allocation(tmp_path: Path) -> Allocation:
    job = parse_job(JOB)
    group = job.groups[0]
    return Allocation(
        id="8a1b2c3d-0000-4000-8000-000000000000",
        index=0,
        job=job,
        group=group,
        alloc_dir=AllocDir(tmp_path / "alloc"),
        node_id="node-uuid",
    )


def test_taskenv_nomad_variables(tmp_path: Path) -> None:
    alloc = _allocation(tmp_path)
    task = alloc.group.tasks[0]
    agent = AgentConfig(datacenter="dc1", region="global", node_name="n1")
    env = task_environment(alloc, task, agent, environ={"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["NOMAD_ALLOC_DIR"] == str(tmp_path / "alloc" / "alloc")
    assert env["NOMAD_TASK_DIR"] == str(tmp_path / "alloc" / "add" / "local")
    assert env["NOMAD_SECRETS_DIR"] == str(tmp_path / "alloc" / "add" / "secrets")
    assert env["NOMAD_ALLOC_ID"] == alloc.id
    assert env["NOMAD_ALLOC_NAME"] == "sum.calc[0]"
    assert env["NOMAD_ALLOC_INDEX"] == "0"
    assert env["NOMAD_TASK_NAME"] == "add"
    assert env["NOMAD_GROUP_NAME"] == "calc"
    assert env["NOMAD_JOB_NAME"] == "sum"
    assert env["NOMAD_JOB_ID"] == "sum"
    assert env["NOMAD_NAMESPACE"] == "default"
    assert env["NOMAD_DC"] == "dc1"
    assert env["NOMAD_REGION"] == "global"
    assert env["NOMAD_CPU_LIMIT"] == "250"
    assert env["NOMAD_MEMORY_LIMIT"] == "64"


def test_taskenv_job_env_interpolated(tmp_path: Path) -> None:
    alloc = _allocation(tmp_path)
    env = task_environment(alloc, alloc.group.tasks[0], AgentConfig(), environ={})
    assert env["GREETING"] == "hi from add"
    assert env["UNKNOWN"] == "${node.unique.id}"


def test_taskenv_denylist_removes_credentials(tmp_path: Path) -> None:
    alloc = _allocation(tmp_path)
    host = {"VAULT_TOKEN": "secret", "HOME": "/root"}
    env = task_environment(alloc, alloc.group.tasks[0], AgentConfig(), environ=host)
    assert "VAULT_TOKEN" not in env
    assert env["HOME"] == "/root"


def test_taskenv_interpolate_leaves_unknown() -> None:
    assert interpolate("${A}-${B}", {"A": "1"}) == "1-${B}"


def test_taskenv_task_config_fields(tmp_path: Path) -> None:
    alloc = _allocation(tmp_path)
    task = alloc.group.tasks[0]
    agent = AgentConfig(node_name="n1")
    config = build_task_config(alloc, task, agent, {"A": "1"}, b"\x80")
    assert re.fullmatch(re.escape(alloc.id) + r"/add/[0-9a-f]{8}", config.id)
    assert config.name == "add"
    assert config.job_name == "sum"
    assert config.job_id == "sum"
    assert config.task_group_name == "calc"
    assert config.namespace == "default"
    assert config.node_name == "n1"
    assert config.node_id == "node-uuid"
    assert config.alloc_id == alloc.id
    assert config.alloc_dir == str(tmp_path / "alloc")
    assert config.stdout_path == str(tmp_path / "alloc/alloc/logs/.add.stdout.fifo")
    assert config.stderr_path == str(tmp_path / "alloc/alloc/logs/.add.stderr.fifo")
    assert config.msgpack_driver_config == b"\x80"
    assert dict(config.env) == {"A": "1"}
    resources = config.resources
    assert resources.allocated_resources.cpu.cpu_shares == 250
    assert resources.allocated_resources.memory.memory_mb == 64
    assert resources.linux_resources.cpu_shares == 250
    assert resources.linux_resources.memory_limit_bytes == 64 * 1024 * 1024


def test_taskenv_new_id_each_start(tmp_path: Path) -> None:
    alloc = _allocation(tmp_path)
    task = alloc.group.tasks[0]
    first = build_task_config(alloc, task, AgentConfig(), {}, b"")
    second = build_task_config(alloc, task, AgentConfig(), {}, b"")
    assert first.id != second.id
