"""The host side of go-plugin's handshake: the environment and the reply line.

The checks and their messages follow go-plugin's `Client.Start` (v1.4.10, as
linked by Nomad 1.6.0 to 1.6.5), so a plugin that this client rejects is also
rejected by a real Nomad agent, with the same words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..handshake import (
    APP_PROTOCOL_VERSION,
    CORE_PROTOCOL_VERSION,
    MAGIC_COOKIE_KEY,
    MAGIC_COOKIE_VALUE,
    PROTOCOL_VERSIONS_ENV_VAR,
)

# go-plugin's defaults; Nomad sets neither MinPort nor MaxPort.
MIN_PORT = 10000
MAX_PORT = 25000

# Nomad only allows gRPC plugins.
ALLOWED_PROTOCOLS = ("grpc",)

# go-plugin treats a sixth field of at most 50 characters as filler, not as
# a server certificate.
MAX_FILLER_CERT_CHARS = 50


class HandshakeError(Exception):
    """The plugin's handshake line is invalid or incompatible with Nomad's."""


@dataclass(frozen=True)
class Handshake:
    """The connection details a plugin announced on its first stdout line."""

    core_version: int
    app_version: int
    network: str
    address: str
    protocol: str

    @property
    def grpc_target(self) -> str:
        """Return the address in grpcio's target syntax."""
        if self.network == "unix":
            return f"unix:{self.address}"
        return self.address


def plugin_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment go-plugin gives a plugin: ours plus its variables."""
    environment = dict(os.environ if base is None else base)
    environment.update(
        {
            MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE,
            "PLUGIN_MIN_PORT": str(MIN_PORT),
            "PLUGIN_MAX_PORT": str(MAX_PORT),
            PROTOCOL_VERSIONS_ENV_VAR: str(APP_PROTOCOL_VERSION),
        }
    )
    return environment


def parse_handshake(line: str) -> Handshake:
    """Parse and validate a handshake line as go-plugin does.

    Raises HandshakeError with go-plugin's message for the first problem.
    """
    line = line.strip()
    parts = line.split("|", 5)
    if len(parts) < 4:
        raise HandshakeError(
            f"Unrecognized remote plugin message: {line}\n\n"
            "This usually means that the plugin is either invalid or simply\n"
            "needs to be recompiled to support the latest protocol."
        )
    _check_core_version(parts[0])
    app_version = _check_app_version(parts[1])
    network, address = parts[2], parts[3]
    protocol = parts[4] if len(parts) >= 5 else "netrpc"
    if protocol not in ALLOWED_PROTOCOLS:
        raise HandshakeError(
            f"Unsupported plugin protocol {protocol!r}. "
            f"Supported: [{' '.join(ALLOWED_PROTOCOLS)}]"
        )
    _check_address(network, address)
    if len(parts) == 6 and len(parts[5]) > MAX_FILLER_CERT_CHARS:
        # Nomad never enables go-plugin's AutoMTLS, so a plugin that sends
        # a certificate expects a TLS client that Nomad will not be.
        raise HandshakeError(
            "error parsing server cert: the plugin sent a TLS certificate, but "
            "Nomad does not enable AutoMTLS; serve plain gRPC instead"
        )
    return Handshake(CORE_PROTOCOL_VERSION, app_version, network, address, protocol)


def _check_core_version(text: str) -> None:
    try:
        core_version = int(text, 10)
    except ValueError:
        raise HandshakeError(
            "Error parsing core protocol version: "
            f'strconv.ParseInt: parsing "{text}": invalid syntax'
        ) from None
    if core_version != CORE_PROTOCOL_VERSION:
        raise HandshakeError(
            "Incompatible core API version with plugin. "
            f"Plugin version: {text}, Core version: {CORE_PROTOCOL_VERSION}\n\n"
            "To fix this, the plugin usually only needs to be recompiled.\n"
            "Please report this to the plugin author."
        )


def _check_app_version(text: str) -> int:
    try:
        app_version = int(text, 10)
    except ValueError:
        raise HandshakeError(
            f'Error parsing protocol version "{text}": '
            f'strconv.Atoi: parsing "{text}": invalid syntax'
        ) from None
    if app_version != APP_PROTOCOL_VERSION:
        raise HandshakeError(
            "Incompatible API version with plugin. "
            f"Plugin version: {app_version}, "
            f"Client versions: [{APP_PROTOCOL_VERSION}]"
        )
    return app_version


def _check_address(network: str, address: str) -> None:
    if network == "unix":
        if not address:
            raise HandshakeError(
                "invalid unix address in the handshake: the socket path is empty"
            )
        return
    if network == "tcp":
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise HandshakeError(
                f"invalid tcp address {address!r} in the handshake: expected HOST:PORT"
            )
        return
    raise HandshakeError(f"Unknown address type: {address}")
