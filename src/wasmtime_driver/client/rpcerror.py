"""Rendering gRPC errors the way grpc-go prints them in Nomad's messages."""

from __future__ import annotations

import grpc


def go_code_name(code: grpc.StatusCode) -> str:
    """Return grpc-go's name for a status code, e.g. "InvalidArgument"."""
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


def describe_rpc_error(err: grpc.RpcError) -> str:
    """Return `rpc error: code = X desc = ...`, as Nomad shows a plugin's error."""
    if isinstance(err, grpc.aio.AioRpcError):
        return f"rpc error: code = {go_code_name(err.code())} desc = {err.details()}"
    return f"rpc error: code = Unknown desc = {err}"
