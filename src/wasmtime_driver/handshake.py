"""The process side of go-plugin's handshake: environment checks and stdout.

go-plugin (v1.4 to v1.6, as linked by Nomad 1.6 to 1.9) starts the plugin
with a magic cookie and the accepted app protocol versions in the environment.
It then reads exactly one line from the plugin's stdout:
`CORE-VERSION|APP-VERSION|NETWORK|ADDRESS|PROTOCOL|` followed by a newline.
Anything written to stdout before that line makes the host fail with
"Unrecognized remote plugin message".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MAGIC_COOKIE_KEY = "NOMAD_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
CORE_PROTOCOL_VERSION = 1
APP_PROTOCOL_VERSION = 2
PROTOCOL_VERSIONS_ENV_VAR = "PLUGIN_PROTOCOL_VERSIONS"
SOCKET_DIR_ENV_VAR = "PLUGIN_UNIX_SOCKET_DIR"
SOCKET_NAME = "plugin.sock"

# sockaddr_un.sun_path on Linux is 108 bytes, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

NOT_STARTED_BY_NOMAD = (
    "this is a Nomad plugin; it is started by a Nomad client agent from its "
    "plugin_dir, not by hand"
)


class HandshakeError(Exception):
    """The environment does not allow this process to serve as a plugin."""


def check_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Raise HandshakeError unless the host's cookie and versions match ours."""
    if environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        raise HandshakeError(
            f"{MAGIC_COOKIE_KEY} is missing or invalid: {NOT_STARTED_BY_NOMAD}"
        )
    versions = environ.get(PROTOCOL_VERSIONS_ENV_VAR, "").strip()
    if not versions:
        return
    accepted = {part.strip() for part in versions.split(",")}
    if str(APP_PROTOCOL_VERSION) not in accepted:
        raise HandshakeError(
            f"unsupported {PROTOCOL_VERSIONS_ENV_VAR} {versions!r}: this plugin "
            f"speaks app protocol version {APP_PROTOCOL_VERSION}, which Nomad "
            "clients request from 1.6 on; start it from a Nomad 1.6 or later "
            "client agent"
        )


def reserve_stdout() -> int:
    """Keep the real stdout for the handshake and send everything else to stderr.

    Returns a duplicate of the original fd 1. fd 1 itself and `sys.stdout`
    then point at stderr, so neither Python code nor C libraries writing to
    fd 1 can put anything before or after the handshake line.
    """
    handshake_fd = os.dup(1)
    # Text still buffered in sys.stdout goes to stderr when it is flushed,
    # because fd 1 is stderr from here on.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return handshake_fd


def make_socket_dir() -> Path:
    """Create a private (0700) directory for the plugin's unix socket.

    go-plugin servers use `PLUGIN_UNIX_SOCKET_DIR` when the host's
    environment sets it, else the system temporary directory.
    """
    # Imported here because `wasmtime-driver run` loads this module before
    # it can catch a Ctrl-C, and tempfile adds to that start-up time.
    import tempfile

    return Path(
        tempfile.mkdtemp(prefix="plugin", dir=os.environ.get(SOCKET_DIR_ENV_VAR))
    )


def socket_path(socket_dir: Path) -> Path:
    """Return the socket path inside `socket_dir`, checking the length limit."""
    path = socket_dir / SOCKET_NAME
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise HandshakeError(
            f"unix socket path {str(path)!r} is longer than {MAX_SOCKET_PATH_BYTES} "
            f"bytes: set {SOCKET_DIR_ENV_VAR} or TMPDIR to a shorter directory"
        )
    return path


def handshake_line(path: Path) -> str:
    """Return the handshake line with the socket address the host connects to."""
    return f"{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{path}|grpc|\n"


def write_handshake(fd: int, path: Path) -> None:
    """Write the handshake line to `fd` in full."""
    data = handshake_line(path).encode()
    while data:
        data = data[os.write(fd, data) :]
