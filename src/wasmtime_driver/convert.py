"""Conversions between protobuf messages and the driver's own types.

Only this module, the servicer and the plugin server import generated code,
so everything below them stays free of protobuf.
"""

from __future__ import annotations

import time
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from . import hclspec
from .events import TaskEvent
from .handle import ExitResult, TaskHandle, TaskRequest, TaskStatus, TaskUsage
from .protocol import driver_pb2, hcl_spec_pb2

# hclspec


def spec_to_proto(spec: hclspec.Spec) -> hcl_spec_pb2.Spec:
    """Convert a schema to the hclspec message Nomad decodes configs with."""
    match spec:
        case hclspec.Object(attributes=attributes):
            obj = hcl_spec_pb2.Object()
            for name, nested in attributes.items():
                obj.attributes[name].CopyFrom(spec_to_proto(nested))
            return hcl_spec_pb2.Spec(object=obj)
        case hclspec.Array(values=values):
            array = hcl_spec_pb2.Array(values=[spec_to_proto(v) for v in values])
            return hcl_spec_pb2.Spec(array=array)
        case hclspec.Attr(name=name, type=type_, required=required):
            attr = hcl_spec_pb2.Attr(name=name, type=type_, required=required)
            return hcl_spec_pb2.Spec(Attr=attr)
        case hclspec.Block(name=name, nested=nested, required=required):
            block = hcl_spec_pb2.Block(
                name=name, required=required, nested=spec_to_proto(nested)
            )
            return hcl_spec_pb2.Spec(block_value=block)
        case hclspec.BlockList() | hclspec.BlockSet():
            return _repeated_block_to_proto(spec)
        case hclspec.BlockMap(name=name, labels=labels, nested=nested):
            block_map = hcl_spec_pb2.BlockMap(
                name=name, labels=list(labels), nested=spec_to_proto(nested)
            )
            return hcl_spec_pb2.Spec(block_map=block_map)
        case hclspec.BlockAttrs(name=name, type=type_, required=required):
            attrs = hcl_spec_pb2.BlockAttrs(name=name, type=type_, required=required)
            return hcl_spec_pb2.Spec(block_attrs=attrs)
        case hclspec.Default(primary=primary, default=default):
            message = hcl_spec_pb2.Default(
                primary=spec_to_proto(primary), default=spec_to_proto(default)
            )
            return hcl_spec_pb2.Spec(default=message)
        case hclspec.Literal(value=value):
            return hcl_spec_pb2.Spec(literal=hcl_spec_pb2.Literal(value=value))
    raise TypeError(f"unknown hclspec node {spec!r}")


def _repeated_block_to_proto(
    spec: hclspec.BlockList | hclspec.BlockSet,
) -> hcl_spec_pb2.Spec:
    nested = spec_to_proto(spec.nested)
    if isinstance(spec, hclspec.BlockList):
        block_list = hcl_spec_pb2.BlockList(
            name=spec.name,
            min_items=spec.min_items,
            max_items=spec.max_items,
            nested=nested,
        )
        return hcl_spec_pb2.Spec(block_list=block_list)
    block_set = hcl_spec_pb2.BlockSet(
        name=spec.name,
        min_items=spec.min_items,
        max_items=spec.max_items,
        nested=nested,
    )
    return hcl_spec_pb2.Spec(block_set=block_set)


def spec_from_proto(message: hcl_spec_pb2.Spec) -> hclspec.Spec:
    """Convert an hclspec message back, as Nomad's client reads a schema."""
    kind = message.WhichOneof("block")
    if kind == "object":
        return hclspec.Object(
            {k: spec_from_proto(v) for k, v in message.object.attributes.items()}
        )
    if kind == "array":
        return hclspec.Array(tuple(spec_from_proto(v) for v in message.array.values))
    if kind == "Attr":
        a = message.Attr
        return hclspec.Attr(a.name, a.type, a.required)
    if kind == "block_value":
        b = message.block_value
        return hclspec.Block(b.name, spec_from_proto(b.nested), b.required)
    if kind in ("block_list", "block_set"):
        r = getattr(message, kind)
        cls = hclspec.BlockList if kind == "block_list" else hclspec.BlockSet
        return cls(r.name, spec_from_proto(r.nested), r.min_items, r.max_items)
    if kind == "block_map":
        m = message.block_map
        return hclspec.BlockMap(m.name, tuple(m.labels), spec_from_proto(m.nested))
    if kind == "block_attrs":
        ba = message.block_attrs
        return hclspec.BlockAttrs(ba.name, ba.type, ba.required)
    if kind == "default":
        d = message.default
        return hclspec.Default(spec_from_proto(d.primary), spec_from_proto(d.default))
    if kind == "literal":
        return hclspec.Literal(message.literal.value)
    raise ValueError(f"hclspec message has no spec set: {message!r}")


# Tasks


def task_request_from_proto(task: driver_pb2.TaskConfig) -> TaskRequest:
    linux = task.resources.linux_resources
    return TaskRequest(
        id=task.id,
        name=task.name,
        alloc_id=task.alloc_id,
        job_name=task.job_name,
        task_group_name=task.task_group_name,
        alloc_dir=Path(task.alloc_dir),
        stdout_path=task.stdout_path,
        stderr_path=task.stderr_path,
        env=dict(task.env),
        driver_config=task.msgpack_driver_config,
        memory_limit_bytes=linux.memory_limit_bytes,
    )


def exit_result_to_proto(result: ExitResult) -> driver_pb2.ExitResult:
    return driver_pb2.ExitResult(
        exit_code=result.exit_code,
        signal=result.signal,
        oom_killed=result.oom_killed,
    )


def task_status_to_proto(handle: TaskHandle) -> driver_pb2.TaskStatus:
    # Nomad's client dereferences `result` and both timestamps, so they are
    # always set, with zero values while the task runs.
    state = (
        driver_pb2.TaskState.RUNNING
        if handle.status is TaskStatus.RUNNING
        else driver_pb2.TaskState.EXITED
    )
    return driver_pb2.TaskStatus(
        id=handle.id,
        name=handle.request.name,
        state=state,
        started_at=timestamp(handle.started_at),
        completed_at=timestamp(handle.completed_at or 0.0),
        result=exit_result_to_proto(handle.result or ExitResult()),
    )


def task_stats_to_proto(task_id: str, usage: TaskUsage) -> driver_pb2.TaskStats:
    cpu_fields = driver_pb2.CPUUsage.Fields
    cpu = driver_pb2.CPUUsage(
        user_mode=usage.user_seconds,
        system_mode=usage.system_seconds,
        percent=usage.cpu_percent,
        measured_fields=[
            cpu_fields.USER_MODE,
            cpu_fields.SYSTEM_MODE,
            cpu_fields.PERCENT,
        ],
    )
    resource_usage = driver_pb2.TaskResourceUsage(cpu=cpu, memory=_memory_usage(usage))
    return driver_pb2.TaskStats(
        id=task_id,
        timestamp=timestamp(usage.timestamp),
        agg_resource_usage=resource_usage,
    )


def _memory_usage(usage: TaskUsage) -> driver_pb2.MemoryUsage:
    # Memory is not measured per task in thread isolation, so there the
    # message is present (Nomad requires it) but lists no measured fields.
    if usage.rss_bytes <= 0:
        return driver_pb2.MemoryUsage()
    return driver_pb2.MemoryUsage(
        rss=usage.rss_bytes,
        measured_fields=[driver_pb2.MemoryUsage.Fields.RSS],
    )


def task_event_to_proto(event: TaskEvent) -> driver_pb2.DriverTaskEvent:
    return driver_pb2.DriverTaskEvent(
        task_id=event.task_id,
        alloc_id=event.alloc_id,
        task_name=event.task_name,
        timestamp=timestamp(event.timestamp),
        message=event.message,
        annotations=dict(event.annotations),
    )


def timestamp(seconds: float | None = None) -> Timestamp:
    message = Timestamp()
    message.FromNanoseconds(int((time.time() if seconds is None else seconds) * 1e9))
    return message
