"""The environment and TaskConfig a Nomad client builds for a task.

For a driver that reports fs_isolation NONE, Nomad's task environment is the
agent's own environment (minus `env.denylist`), then the NOMAD_* variables
with host paths, then the task's `env` block, whose values may refer to the
earlier variables as `${NAME}`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from ..jobspec import Job, Task, TaskGroup
from ..protocol import driver_pb2
from .agentconfig import AgentConfig
from .allocdir import AllocDir

MIB = 1024 * 1024
NAMESPACE = "default"

# Nomad's default `client { options { "env.denylist" = ... } }`: credentials
# of the agent that tasks must not see.
ENV_DENYLIST = frozenset(
    {
        "CONSUL_TOKEN",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_LICENSE",
        "CONSUL_LICENSE_PATH",
        "VAULT_TOKEN",
        "VAULT_LICENSE",
        "VAULT_LICENSE_PATH",
        "NOMAD_LICENSE",
        "NOMAD_LICENSE_PATH",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS",
    }
)

_REFERENCE = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Allocation:
    """One allocation of a task group on this node."""

    id: str
    index: int
    job: Job
    group: TaskGroup
    alloc_dir: AllocDir
    node_id: str

    @property
    def name(self) -> str:
        return f"{self.job.id}.{self.group.name}[{self.index}]"


def new_task_id(alloc_id: str, task_name: str) -> str:
    """Return a task id as Nomad makes one for every start attempt."""
    return f"{alloc_id}/{task_name}/{secrets.token_hex(4)}"


def host_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the agent's environment without the denylisted variables."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in ENV_DENYLIST}


def nomad_variables(
    alloc: Allocation, task: Task, agent: AgentConfig
) -> dict[str, str]:
    """Return the NOMAD_* variables Nomad sets for a task without isolation."""
    task_dir = alloc.alloc_dir.task_dir(task.name)
    variables = {
        "NOMAD_ALLOC_DIR": str(alloc.alloc_dir.shared_dir),
        "NOMAD_TASK_DIR": str(task_dir.local_dir),
        "NOMAD_SECRETS_DIR": str(task_dir.secrets_dir),
        "NOMAD_MEMORY_LIMIT": str(task.resources.memory_mb),
        "NOMAD_CPU_LIMIT": str(task.resources.cpu_mhz),
        "NOMAD_ALLOC_ID": alloc.id,
        "NOMAD_ALLOC_NAME": alloc.name,
        "NOMAD_ALLOC_INDEX": str(alloc.index),
        "NOMAD_TASK_NAME": task.name,
        "NOMAD_GROUP_NAME": alloc.group.name,
        "NOMAD_JOB_NAME": alloc.job.name,
        "NOMAD_JOB_ID": alloc.job.id,
        "NOMAD_NAMESPACE": NAMESPACE,
        "NOMAD_DC": agent.datacenter,
        "NOMAD_REGION": agent.region,
    }
    if task.resources.memory_max_mb:
        variables["NOMAD_MEMORY_MAX_LIMIT"] = str(task.resources.memory_max_mb)
    for key, value in task.meta.items():
        # Nomad sets each meta key both as written and upper-cased.
        variables[f"NOMAD_META_{key}"] = value
        variables[f"NOMAD_META_{key.upper()}"] = value
    return variables


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace each `${NAME}` whose NAME is in `env`; leave others as written."""

    def replace(match: re.Match[str]) -> str:
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def task_environment(
    alloc: Allocation,
    task: Task,
    agent: AgentConfig,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the complete environment Nomad sends in TaskConfig.env."""
    env = host_environment(environ)
    env.update(nomad_variables(alloc, task, agent))
    base = dict(env)
    for key, value in task.env.items():
        env[key] = interpolate(value, base)
    return env


def task_resources(task: Task) -> driver_pb2.Resources:
    """Return the resources message as Nomad fills it for a task."""
    resources = task.resources
    limit_mb = max(resources.memory_mb, resources.memory_max_mb)
    allocated = driver_pb2.AllocatedTaskResources(
        cpu=driver_pb2.AllocatedCpuResources(cpu_shares=resources.cpu_mhz),
        memory=driver_pb2.AllocatedMemoryResources(
            memory_mb=resources.memory_mb, memory_max_mb=resources.memory_max_mb
        ),
    )
    linux = driver_pb2.LinuxResources(
        cpu_shares=resources.cpu_mhz, memory_limit_bytes=limit_mb * MIB
    )
    return driver_pb2.Resources(allocated_resources=allocated, linux_resources=linux)


def build_task_config(
    alloc: Allocation,
    task: Task,
    agent: AgentConfig,
    env: Mapping[str, str],
    driver_config: bytes,
) -> driver_pb2.TaskConfig:
    """Return the TaskConfig of one start attempt, with a new task id."""
    if task.logs_disabled:
        stdout_path = stderr_path = os.devnull
    else:
        stdout_path = str(alloc.alloc_dir.stdout_fifo(task.name))
        stderr_path = str(alloc.alloc_dir.stderr_fifo(task.name))
    return driver_pb2.TaskConfig(
        id=new_task_id(alloc.id, task.name),
        name=task.name,
        msgpack_driver_config=driver_config,
        env=dict(env),
        resources=task_resources(task),
        alloc_dir=str(alloc.alloc_dir.path),
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        task_group_name=alloc.group.name,
        job_name=alloc.job.name,
        alloc_id=alloc.id,
        job_id=alloc.job.id,
        namespace=NAMESPACE,
        node_name=agent.node_name,
        node_id=alloc.node_id,
    )
