"""Check the committed protocol code against proto/ and against wire facts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2

from wasmtime_driver.protocol import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    grpc_broker_pb2_grpc,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
    hcl_spec_pb2,
    recoverable_error_pb2,
)

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "generate_protos.py"

DRIVER_RPCS = [
    "TaskConfigSchema",
    "Capabilities",
    "Fingerprint",
    "RecoverTask",
    "StartTask",
    "WaitTask",
    "StopTask",
    "DestroyTask",
    "InspectTask",
    "TaskStats",
    "TaskEvents",
    "SignalTask",
    "ExecTask",
    "ExecTaskStreaming",
    "CreateNetwork",
    "DestroyNetwork",
]


def test_protocol_generated_code_current() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr


def test_protocol_spec_oneof_members() -> None:
    oneof = hcl_spec_pb2.Spec.DESCRIPTOR.oneofs_by_name["block"]
    numbers = {field.name: field.number for field in oneof.fields}

    assert numbers["Attr"] == 3
    assert numbers["block_value"] == 4
    assert numbers["default"] == 9
    assert len(numbers) == 10
    spec = hcl_spec_pb2.Spec(Attr=hcl_spec_pb2.Attr(name="x", type="string"))
    assert spec.WhichOneof("block") == "Attr"


def test_protocol_plugin_type_values() -> None:
    assert base_pb2.PluginType.Value("DRIVER") == 2
    assert base_pb2.PluginType.Value("DEVICE") == 3
    assert base_pb2.DRIVER == 2


def test_protocol_recoverable_error_type_url() -> None:
    detail = any_pb2.Any()
    detail.Pack(recoverable_error_pb2.RecoverableError(recoverable=True))

    full_name = recoverable_error_pb2.RecoverableError.DESCRIPTOR.full_name
    assert full_name == "hashicorp.nomad.plugins.shared.structs.RecoverableError"
    assert detail.type_url == f"type.googleapis.com/{full_name}"


def test_protocol_capitalised_field_names() -> None:
    driver_config = base_pb2.NomadDriverConfig.DESCRIPTOR.fields_by_name
    linux = driver_pb2.LinuxResources.DESCRIPTOR.fields_by_name
    isolation = driver_pb2.NetworkIsolationSpec.DESCRIPTOR.fields_by_name

    assert driver_config["ClientMaxPort"].number == 1
    assert driver_config["ClientMinPort"].number == 2
    assert driver_config["Topology"].number == 3
    assert linux["PercentTicks"].number == 8
    assert 7 not in {field.number for field in linux.values()}
    assert isolation["hostsConfig"].number == 4


def test_protocol_version_additions_present() -> None:
    capabilities = driver_pb2.DriverCapabilities

    assert capabilities.FSIsolation.Value("UNVEIL") == 3
    assert capabilities.DESCRIPTOR.fields_by_name["dynamic_workload_users"].number == 9
    assert driver_pb2.Mount.DESCRIPTOR.fields_by_name["selinux_label"].number == 5
    assert capabilities.MountConfigs.Value("ANY_MOUNTS") == 0
    assert capabilities.MountConfigs.Value("UNKNOWN_MOUNTS") == 0


def test_protocol_driver_methods() -> None:
    service = driver_pb2.DESCRIPTOR.services_by_name["Driver"]

    assert [method.name for method in service.methods] == DRIVER_RPCS
    assert service.full_name == "hashicorp.nomad.plugins.drivers.proto.Driver"
    streaming = service.methods_by_name["ExecTaskStreaming"]
    assert streaming.client_streaming
    assert streaming.server_streaming
    assert service.methods_by_name["Fingerprint"].server_streaming
    assert not service.methods_by_name["Fingerprint"].client_streaming


class RecordingChannel:
    """Stand in for grpc.Channel and record the method paths a stub binds."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def _record(self, method: str, *args: object, **kwargs: object) -> None:
        self.paths.append(method)

    unary_unary = unary_stream = stream_unary = stream_stream = _record


def stub_paths(stub_class: Callable[[Any], object]) -> list[str]:
    channel = RecordingChannel()
    stub_class(channel)
    return channel.paths


def test_protocol_method_paths() -> None:
    driver = "/hashicorp.nomad.plugins.drivers.proto.Driver/"

    assert stub_paths(base_pb2_grpc.BasePluginStub) == [
        "/hashicorp.nomad.plugins.base.proto.BasePlugin/PluginInfo",
        "/hashicorp.nomad.plugins.base.proto.BasePlugin/ConfigSchema",
        "/hashicorp.nomad.plugins.base.proto.BasePlugin/SetConfig",
    ]
    assert stub_paths(driver_pb2_grpc.DriverStub) == [
        driver + rpc for rpc in DRIVER_RPCS
    ]
    assert stub_paths(grpc_controller_pb2_grpc.GRPCControllerStub) == [
        "/plugin.GRPCController/Shutdown"
    ]
    assert stub_paths(grpc_stdio_pb2_grpc.GRPCStdioStub) == [
        "/plugin.GRPCStdio/StreamStdio"
    ]
    assert stub_paths(grpc_broker_pb2_grpc.GRPCBrokerStub) == [
        "/plugin.GRPCBroker/StartStream"
    ]
