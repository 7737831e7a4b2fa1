"""Tests for reading the plugin block of a Nomad agent config file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wasmtime_driver.client.agentconfig import (
    AgentConfigError,
    load_agent_config,
    parse_agent_config,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example" / "config" / "agent.hcl"


def test_agentconfig_example_file() -> None:
    agent = load_agent_config(EXAMPLE)
    assert agent.plugin_config_given
    (cache,) = agent.plugin_config["cache"]
    assert cache["enabled"] is True
    assert cache["type"] == "lru"
    assert cache["size"] == 10
    # HCL1 turns every nested block into a list of maps.
    assert cache["expiration"] == [{"enabled": True, "entryTTL": 10}]
    assert cache["preCache"][0]["enabled"] is False
    assert agent.plugin_args == ()


def test_agentconfig_missing_plugin_block() -> None:
    agent = parse_agent_config('datacenter = "west"\nclient { enabled = true }\n')
    assert agent.plugin_config == {}
    assert not agent.plugin_config_given
    assert agent.datacenter == "west"
    assert agent.region == "global"
    assert agent.client_min_port == 14000
    assert agent.client_max_port == 14512


def test_agentconfig_other_plugins_ignored() -> None:
    text = 'plugin "raw_exec" {\n  config { enabled = true }\n}\n'
    assert parse_agent_config(text).plugin_config == {}


def test_agentconfig_wrong_label_warns(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        'plugin "wasmtime" {\n  config { cache { size = 5 } }\n}\n'
        'plugin "raw_exec" {\n  config { enabled = true }\n}\n'
    )
    with caplog.at_level(logging.WARNING, logger="wasmtime_driver.client"):
        agent = parse_agent_config(text, "agent.hcl")
    assert agent.plugin_config == {}
    (record,) = caplog.records
    message = record.getMessage()
    assert 'no plugin "wasmtime-driver" block' in message
    assert 'plugin blocks found: "wasmtime", "raw_exec"' in message
    assert "file name in plugin_dir" in message


@pytest.mark.parametrize(
    "text",
    ['datacenter = "west"\n', 'plugin "wasmtime-driver" {\n  args = []\n}\n'],
    ids=["no-plugin-blocks", "right-label"],
)
def test_agentconfig_label_no_warning(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wasmtime_driver.client"):
        parse_agent_config(text)
    assert caplog.records == []


def test_agentconfig_args_and_client_ports() -> None:
    text = """
region = "eu"
name   = "node-7"
client {
  client_min_port = 15000
  client_max_port = 15100
}
plugin "wasmtime-driver" {
  args = ["--flag", "value"]
}
"""
    agent = parse_agent_config(text)
    assert agent.plugin_args == ("--flag", "value")
    assert agent.plugin_config == {}
    assert not agent.plugin_config_given
    assert agent.region == "eu"
    assert agent.node_name == "node-7"
    assert agent.client_min_port == 15000
    assert agent.client_max_port == 15100


def test_agentconfig_empty_config_block_given() -> None:
    agent = parse_agent_config('plugin "wasmtime-driver" {\n  config {}\n}\n')
    assert agent.plugin_config_given
    assert agent.plugin_config == {}


def test_agentconfig_duplicate_plugin_block() -> None:
    block = 'plugin "wasmtime-driver" {\n  config {}\n}\n'
    with pytest.raises(AgentConfigError, match="configured 2 times"):
        parse_agent_config(block + block)


def test_agentconfig_syntax_error() -> None:
    with pytest.raises(AgentConfigError, match="failed to parse"):
        parse_agent_config('plugin "wasmtime-driver" {\n')


def test_agentconfig_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="failed to read agent config"):
        load_agent_config(tmp_path / "absent.hcl")


def test_agentconfig_args_must_be_strings() -> None:
    text = 'plugin "wasmtime-driver" {\n  args = [1]\n}\n'
    with pytest.raises(AgentConfigError, match="args must be a list of strings"):
        parse_agent_config(text)


def test_agentconfig_example_encodes_against_plugin_schema() -> None:
    import msgpack

    from wasmtime_driver.client.loader import CatalogEntry, encode_plugin_config
    from wasmtime_driver.config import plugin_config_spec
    from wasmtime_driver.convert import spec_from_proto, spec_to_proto

    spec = spec_from_proto(spec_to_proto(plugin_config_spec()))
    entry = CatalogEntry("wasmtime", "0.1.0", "v0.1.0", spec)
    encoded = encode_plugin_config(entry, load_agent_config(EXAMPLE))
    cache = msgpack.unpackb(encoded, raw=False)["cache"]
    assert cache["type"] == "lru"
    assert cache["size"] == 10
