"""Check the go-plugin environment rules and the handshake line."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmtime_driver import handshake

COOKIE = {handshake.MAGIC_COOKIE_KEY: handshake.MAGIC_COOKIE_VALUE}


@pytest.mark.parametrize(
    "versions",
    ["", "2", "1,2", " 2 , 3 ", "2,"],
    ids=["unset", "2", "1-2", "spaces", "trailing"],
)
def test_handshake_accepts_versions(versions: str) -> None:
    handshake.check_environment(
        {**COOKIE, handshake.PROTOCOL_VERSIONS_ENV_VAR: versions}
    )


@pytest.mark.parametrize("versions", ["1", "3,4", "12"], ids=["1", "3-4", "12"])
def test_handshake_rejects_versions(versions: str) -> None:
    environ = {**COOKIE, handshake.PROTOCOL_VERSIONS_ENV_VAR: versions}
    with pytest.raises(
        handshake.HandshakeError, match="unsupported PLUGIN_PROTOCOL_VERSIONS"
    ):
        handshake.check_environment(environ)


def test_handshake_version_error_names_nomad_range() -> None:
    environ = {**COOKIE, handshake.PROTOCOL_VERSIONS_ENV_VAR: "3"}
    with pytest.raises(
        handshake.HandshakeError,
        match="Nomad 1.6 or later client agent$",
    ):
        handshake.check_environment(environ)


@pytest.mark.parametrize(
    "environ", [{}, {handshake.MAGIC_COOKIE_KEY: "x"}], ids=["missing", "wrong"]
)
def test_handshake_rejects_cookie(environ: dict[str, str]) -> None:
    with pytest.raises(
        handshake.HandshakeError,
        match="NOMAD_PLUGIN_MAGIC_COOKIE is missing or invalid",
    ):
        handshake.check_environment(environ)


def test_handshake_line_fields() -> None:
    line = handshake.handshake_line(Path("/tmp/plugin1/plugin.sock"))

    assert line.endswith("\n")
    assert line.rstrip("\n").split("|") == [
        "1",
        "2",
        "unix",
        "/tmp/plugin1/plugin.sock",
        "grpc",
        "",
    ]


def test_handshake_socket_path_too_long(tmp_path: Path) -> None:
    long_dir = tmp_path / ("d" * 120)
    with pytest.raises(
        handshake.HandshakeError,
        match="longer than 107 bytes: set PLUGIN_UNIX_SOCKET_DIR",
    ):
        handshake.socket_path(long_dir)


def test_handshake_socket_dir_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(handshake.SOCKET_DIR_ENV_VAR, str(tmp_path))
    socket_dir = handshake.make_socket_dir()

    assert socket_dir.parent == tmp_path
    assert socket_dir.name.startswith("plugin")
    assert socket_dir.stat().st_mode & 0o777 == 0o700
