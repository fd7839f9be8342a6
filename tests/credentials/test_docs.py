"""docs/node-credentials.md stays true: its node policy is the one the live tests use, and
every configuration it shows parses and names the installed tools."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from registry.credentials.kubelet import VERSIONS
from tests.credentials.conftest import NODE_POLICY, PROVIDER

DOC = Path(__file__).resolve().parents[2] / "docs" / "node-credentials.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_documented_node_policy_is_the_tested_one() -> None:
    [shell] = [b for b in blocks("sh") if "node.json" in b]
    policy = re.search(r"<<'JSON'\n(.*?)\n\s*JSON\n", shell, flags=re.DOTALL)
    assert policy is not None
    assert json.loads(policy.group(1)) == NODE_POLICY


def test_the_documented_configurations_parse() -> None:
    configs = [json.loads(b) for b in blocks("json")]
    assert {"credHelpers": {"registry.example.com": "registry"}} in configs
    mirror = [c for c in configs if "Statement" in c]
    assert mirror and mirror[0]["Statement"][0]["Principal"] == "*"
    hosts = [tomllib.loads(b) for b in blocks("toml")]
    assert len(hosts) == 2 and all("server" in h and h["host"] for h in hosts)
    yaml = pytest.importorskip("yaml")
    [config] = [yaml.safe_load(b) for b in blocks("yaml")]
    assert config["apiVersion"] == "kubelet.config.k8s.io/v1"
    assert config["kind"] == "CredentialProviderConfig"
    [provider] = config["providers"]
    assert provider["name"] == PROVIDER and provider["apiVersion"] in VERSIONS
    assert provider["defaultCacheDuration"] and provider["matchImages"]
    assert not any("*" in image.rpartition(":")[2] for image in provider["matchImages"])
