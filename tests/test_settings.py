"""Settings: defaults < TOML file < REGISTRY_* environment < CLI flags, validated by key."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry.settings import Settings, SettingsError, load_settings

FULL_TOML = """
[server]
host = "0.0.0.0"
port = 5001
public_url = "https://registry.example.com"

[storage]
driver = "filesystem"
delete_enabled = false
max_threads = 8

[storage.filesystem]
root = "/var/lib/registry"
fsync = false
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return path


def settings_error(tmp_path: Path, text: str | None = None,
                   environ: dict[str, str] | None = None) -> str:
    config = write_config(tmp_path, text) if text is not None else None
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ=environ or {})
    return str(caught.value)


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 5000)
    assert settings.server.public_url is None
    assert settings.storage.driver == "filesystem"
    assert settings.storage.delete_enabled is True
    assert settings.storage.filesystem.root == "./data"


def test_toml_file(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, FULL_TOML), environ={})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 5001)
    assert settings.server.public_url == "https://registry.example.com"
    assert settings.storage.delete_enabled is False
    assert settings.storage.max_threads == 8
    assert settings.storage.filesystem.root == "/var/lib/registry"
    assert settings.storage.filesystem.fsync is False


def test_partial_toml_keeps_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "[server]\nport = 6000\n"), environ={})
    assert settings.server.port == 6000
    assert settings.server.host == "127.0.0.1"
    assert settings.storage == Settings().storage


def test_environment_overrides_toml(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_SERVER_PORT": "7000",
        "REGISTRY_SERVER_PUBLIC_URL": "http://other.example.com",
        "REGISTRY_STORAGE_FILESYSTEM_ROOT": "/srv/images",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "1",
        "REGISTRY_STORAGE_MAX_THREADS": "3",
        "PATH": "/usr/bin",
        "SERVER_PORT": "1",
    }
    settings = load_settings(write_config(tmp_path, FULL_TOML), environ=environ)
    assert settings.server.port == 7000
    assert settings.server.host == "0.0.0.0"  # from TOML, not overridden
    assert settings.server.public_url == "http://other.example.com"
    assert settings.storage.filesystem.root == "/srv/images"
    assert settings.storage.delete_enabled is True
    assert settings.storage.filesystem.fsync is True
    assert settings.storage.max_threads == 3


@pytest.mark.parametrize(("value", "expected"), [
    ("false", False), ("0", False), ("no", False), ("off", False), ("FALSE", False),
    ("true", True), ("1", True), ("yes", True), ("on", True),
])
def test_environment_boolean_for_key_with_underscore(value: str, expected: bool) -> None:
    settings = load_settings(environ={"REGISTRY_STORAGE_DELETE_ENABLED": value})
    assert settings.storage.delete_enabled is expected


def test_environment_without_toml() -> None:
    settings = load_settings(environ={"REGISTRY_SERVER_PORT": "5050",
                                      "REGISTRY_STORAGE_FILESYSTEM_ROOT": "/data"})
    assert settings.server.port == 5050
    assert settings.storage.filesystem.root == "/data"


def test_cli_overrides_beat_environment_and_toml(tmp_path: Path) -> None:
    settings = load_settings(
        write_config(tmp_path, FULL_TOML),
        environ={"REGISTRY_SERVER_PORT": "7000", "REGISTRY_SERVER_HOST": "10.0.0.1"},
        overrides={"server.port": 1, "storage.filesystem.root": "/cli", "server.host": None},
    )
    assert settings.server.port == 1
    assert settings.storage.filesystem.root == "/cli"
    assert settings.server.host == "10.0.0.1"  # a flag left unset (None) changes nothing


@pytest.mark.parametrize(("text", "key"), [
    ("[server]\nprot = 5000\n", "prot"),
    ("[storage.filesystem]\nrooot = '/x'\n", "rooot"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    ("top_level = 1\n", "top_level"),
])
def test_unknown_toml_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    assert key in settings_error(tmp_path, text)


@pytest.mark.parametrize(("text", "key"), [
    ("[server]\nport = 'x'\n", "server.port"),
    ("[server]\nport = true\n", "server.port"),
    ("[server]\nport = 5000.0\n", "server.port"),
    ("[server]\nhost = 5\n", "server.host"),
    ("[storage]\ndelete_enabled = 'maybe'\n", "storage.delete_enabled"),
    ("[storage.filesystem]\nroot = 1\n", "storage.filesystem.root"),
])
def test_wrong_type_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in settings_error(tmp_path, text)


@pytest.mark.parametrize(("name", "value", "key"), [
    ("REGISTRY_SERVER_PORT", "x", "server.port"),
    ("REGISTRY_STORAGE_DELETE_ENABLED", "maybe", "storage.delete_enabled"),
    ("REGISTRY_STORAGE_MAX_THREADS", "many", "storage.max_threads"),
])
def test_wrong_type_from_environment_names_the_key(name: str, value: str, key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(environ={name: value})


def test_wrong_type_from_cli_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"server\.port"):
        load_settings(environ={}, overrides={"server.port": "abc"})


@pytest.mark.parametrize(("text", "key"), [
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\nport = -1\n", "server.port"),
    ("[server]\npublic_url = 'registry.example.com'\n", "server.public_url"),
    ("[server]\nworkers = 0\n", "server.workers"),
    ("[storage]\nmax_threads = 0\n", "storage.max_threads"),
    ("[storage.filesystem]\nmetadata_threads = 0\n", "storage.filesystem.metadata_threads"),
])
def test_out_of_range_values_are_named(tmp_path: Path, text: str, key: str) -> None:
    assert key in settings_error(tmp_path, text)


def test_unknown_driver(tmp_path: Path) -> None:
    assert "nope" in settings_error(tmp_path, "[storage]\ndriver = 'nope'\n")
    assert "storage.driver" in settings_error(
        tmp_path, environ={"REGISTRY_STORAGE_DRIVER": "nope"})


def test_section_must_be_a_table(tmp_path: Path) -> None:
    assert "server" in settings_error(tmp_path, "server = 5\n")


@pytest.mark.parametrize(("text", "environ", "overrides"), [
    ("server = 5\n", {"REGISTRY_SERVER_PORT": "1"}, None),
    ("server = 5\n", {}, {"server.port": 1}),
    (None, {"REGISTRY_SERVER": "x", "REGISTRY_SERVER_PORT": "1"}, None),
], ids=["toml-then-env", "toml-then-cli", "env-then-env"])
def test_section_that_is_not_a_table_is_named_even_with_overrides(
        tmp_path: Path, text: str | None, environ: dict[str, str],
        overrides: dict[str, object] | None) -> None:
    config = write_config(tmp_path, text) if text is not None else None
    with pytest.raises(SettingsError, match="server"):
        load_settings(config, environ=environ, overrides=overrides)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    assert "registry.toml" in settings_error(tmp_path, "[server\nport = 1\n")


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.storage.filesystem.root = "/elsewhere"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.storage = settings.storage  # type: ignore[misc]


def _registry_cli(tmp_path: Path, *args: str,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    return subprocess.run(
        [sys.executable, "-m", "registry", *args], cwd=tmp_path, env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_serve_with_missing_config_fails_cleanly(tmp_path: Path) -> None:
    result = _registry_cli(tmp_path, "serve", "--config", "missing.toml")
    assert result.returncode != 0
    assert "missing.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_serve_with_bad_environment_fails_cleanly(tmp_path: Path) -> None:
    result = _registry_cli(tmp_path, "serve", env={"REGISTRY_SERVER_PORT": "x"})
    assert result.returncode != 0
    assert "server.port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"timeout": 0}, {"backoff": 0},
                                 {"backoff": 10, "max_backoff": 5}],
                         ids=["attempts", "timeout", "backoff", "ceiling-below-backoff"])
def test_event_endpoint_retries_are_checked_like_replication(bad: dict[str, float]) -> None:
    endpoint = {"name": "hooks", "url": "http://hooks.example/in", **bad}
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"REGISTRY_EVENTS_ENDPOINTS": json.dumps([endpoint])})
    assert "events.endpoints" in str(caught.value) and "max_backoff" in str(caught.value)
