"""Reading the parts of a Nomad agent config file that a client needs here.

A Nomad agent reads `plugin "<file name>" { args = [...] config { ... } }`
with HCL1, where every nested block becomes a list of maps. The `config` map
(`{}` when absent, so the schema's defaults still apply) goes through the same
hcldec pipeline as a task config, with no variables. The agent's
datacenter, region, node name and the client's port range for plugins, which
this module also reads.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lark.exceptions import LarkError

from ..errors import ConfigError
from ..hcldec import native_to_json, parse_hcl, unquote_key
from ..jobspec import shape_config

logger = logging.getLogger(__name__)

PLUGIN_NAME = "wasmtime-driver"

# Nomad's defaults for `client { client_min_port, client_max_port }`.
DEFAULT_CLIENT_MIN_PORT = 14000
DEFAULT_CLIENT_MAX_PORT = 14512
DEFAULT_DATACENTER = "dc1"
DEFAULT_REGION = "global"


class AgentConfigError(ConfigError):
    """An agent config file that cannot be read or understood."""


@dataclass(frozen=True)
class AgentConfig:
    """The agent settings the run command uses; defaults are Nomad's."""

    plugin_args: tuple[str, ...] = ()
    plugin_config: dict[str, Any] = field(default_factory=dict)
    # Whether the plugin block has a `config` block at all: Nomad rejects one
    # for a plugin whose ConfigSchema is empty.
    plugin_config_given: bool = False
    datacenter: str = DEFAULT_DATACENTER
    region: str = DEFAULT_REGION
    node_name: str = field(default_factory=socket.gethostname)
    client_min_port: int = DEFAULT_CLIENT_MIN_PORT
    client_max_port: int = DEFAULT_CLIENT_MAX_PORT


def load_agent_config(path: str | Path, plugin_name: str = PLUGIN_NAME) -> AgentConfig:
    """Read the agent config file at `path`; raises AgentConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AgentConfigError(
            f"failed to read agent config {str(path)!r}: {err}"
        ) from err
    return parse_agent_config(text, str(path), plugin_name)


def parse_agent_config(
    text: str, filename: str = "<agent config>", plugin_name: str = PLUGIN_NAME
) -> AgentConfig:
    """Parse agent config text; `filename` names the source in errors."""
    try:
        body = parse_hcl(text)
    except LarkError as err:
        raise AgentConfigError(f"failed to parse {filename}: {err}") from None
    plugin = _plugin_block(body, plugin_name, filename)
    client = _single_block(body, "client", filename)
    config_blocks = plugin.get("config", [])
    if len(config_blocks) > 1:
        raise AgentConfigError(
            f"{filename}: plugin {plugin_name!r} has {len(config_blocks)} config "
            "blocks; merge them into one"
        )
    return AgentConfig(
        plugin_args=tuple(_string_list(plugin, "args", filename)),
        plugin_config=shape_config(config_blocks[0]) if config_blocks else {},
        plugin_config_given=bool(config_blocks),
        datacenter=_string(body, "datacenter", DEFAULT_DATACENTER, filename),
        region=_string(body, "region", DEFAULT_REGION, filename),
        node_name=_string(body, "name", socket.gethostname(), filename),
        client_min_port=_port(client, "client_min_port", DEFAULT_CLIENT_MIN_PORT),
        client_max_port=_port(client, "client_max_port", DEFAULT_CLIENT_MAX_PORT),
    )


def _plugin_block(
    body: Mapping[str, Any], plugin_name: str, filename: str
) -> dict[str, Any]:
    """Return the body of `plugin "<plugin_name>"`, or {} when there is none.

    Logs a warning when the file has plugin blocks but none for this plugin,
    because Nomad then silently starts the plugin with its defaults.
    """
    found: list[dict[str, Any]] = []
    labels: list[str] = []
    for block in body.get("plugin", []):
        if not isinstance(block, dict) or len(block) != 1:
            raise AgentConfigError(
                f"{filename}: a plugin block needs one label, the plugin's file name"
            )
        ((label, inner),) = block.items()
        labels.append(unquote_key(label))
        if labels[-1] == plugin_name and isinstance(inner, dict):
            found.append(inner)
    if labels and not found:
        _warn_unmatched_labels(labels, plugin_name, filename)
    if len(found) > 1:
        raise AgentConfigError(
            f"{filename}: plugin {plugin_name!r} is configured {len(found)} times; "
            "keep one plugin block"
        )
    return found[0] if found else {}


def _warn_unmatched_labels(labels: list[str], plugin_name: str, filename: str) -> None:
    found = ", ".join(f'"{label}"' for label in labels)
    logger.warning(
        f'{filename}: no plugin "{plugin_name}" block, so the plugin uses its '
        f"default config; plugin blocks found: {found}. The label must be the "
        f'plugin\'s file name in plugin_dir: plugin "{plugin_name}" {{ ... }}'
    )


def _single_block(body: Mapping[str, Any], name: str, filename: str) -> dict[str, Any]:
    blocks = body.get(name, [])
    if not blocks:
        return {}
    if not isinstance(blocks, list) or not isinstance(blocks[0], dict):
        raise AgentConfigError(f"{filename}: {name} must be a block")
    merged: dict[str, Any] = {}
    # HCL1 merges repeated top-level blocks such as `client`.
    for block in blocks:
        merged.update(block)
    return merged


def _string(body: Mapping[str, Any], key: str, default: str, filename: str) -> str:
    if key not in body:
        return default
    value = native_to_json(body[key])
    if not isinstance(value, str):
        raise AgentConfigError(f"{filename}: {key} must be a string, not {value!r}")
    return value


def _string_list(body: Mapping[str, Any], key: str, filename: str) -> list[str]:
    value = native_to_json(body.get(key, []))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AgentConfigError(
            f"{filename}: {key} must be a list of strings, not {value!r}"
        )
    return value


def _port(body: Mapping[str, Any], key: str, default: int) -> int:
    value = native_to_json(body.get(key, default))
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise AgentConfigError(
            f"client.{key} must be a port number, not {value!r}"
        ) from None
    if not 0 < port < 65536:
        raise AgentConfigError(f"client.{key} must be between 1 and 65535, not {port}")
    return port
