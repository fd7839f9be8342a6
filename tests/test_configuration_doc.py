"""docs/configuration.md: the generator's output, every setting on it with a meaning, and the
environment names it states read by the real loader."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry import settings as settings_module
from registry import settings_doc
from registry.settings import EventEndpoint, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"


def page_rows() -> dict[str, list[str]]:
    """Key -> [key, type, default, environment, meaning], from the page's tables."""
    rows: dict[str, list[str]] = {}
    for line in PAGE.read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


def page_sections() -> dict[str, str]:
    """Heading ("[server.tls]") -> the paragraph under it."""
    lines = PAGE.read_text().splitlines()
    return {line[len("## `"):-1]: "" if lines[i + 2].startswith("|") else lines[i + 2]
            for i, line in enumerate(lines) if line.startswith("## `")}


def every_field(cls: type = Settings, prefix: str = "",
                seen: set[type] | None = None) -> Iterator[tuple[str, bool, bool]]:
    """(key as the page writes it, whether it is a table, whether it is a secret)."""
    if seen is not None:
        seen.add(cls)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(hint):
            yield key, True, False
            yield from every_field(typing.cast(type, hint), f"{key}.", seen)
            continue
        yield key, False, not item.repr
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and dataclasses.is_dataclass(args[0]):
            yield from every_field(typing.cast(type, args[0]), f"{key}[].", seen)


def test_committed_page_is_the_generators_output() -> None:
    generated = subprocess.run([sys.executable, "-m", "registry.settings_doc"], cwd=ROOT,
                               capture_output=True, check=True).stdout.decode()
    assert PAGE.read_text() == generated, \
        f"docs/configuration.md is out of date: regenerate it with `{settings_doc.COMMAND}`"


def test_every_setting_has_a_meaning() -> None:
    rows, sections = page_rows(), page_sections()
    seen: set[type] = set()
    missing = []
    for key, table, _ in every_field(seen=seen):
        if table:
            if not sections.get(f"[{key}]"):
                missing.append(f"[{key}]")
        elif not rows.get(key, [""] * 5)[4].removeprefix("Secret.").strip():
            missing.append(key)
    assert not missing, ("settings without a meaning on docs/configuration.md (comment them in "
                         f"registry/settings.py, then run `{settings_doc.COMMAND}`): {missing}")
    defined = {cls for cls in vars(settings_module).values()
               if dataclasses.is_dataclass(cls) and cls.__module__ == settings_module.__name__}
    assert defined == seen, f"settings dataclasses not reached from Settings: {defined - seen}"


def test_secrets_show_no_value() -> None:
    rows = page_rows()
    secrets = [key for key, table, secret in every_field() if secret]
    assert "auth.secret_key" in secrets
    for key in secrets:
        assert rows[key][4].startswith("Secret. "), key
        assert rows[key][2] in ("unset", '`""`', "`{}`", "*(a secret: not shown)*"), key


def test_a_comment_above_and_beside_a_field_is_its_meaning() -> None:
    source = '''
class Example:
    """Not a field's."""

    # Seconds to wait,
    # at most.
    timeout: float = 1.0  # 0: forever
    name: str = ""  # a "#" in a string is no comment: "x#y"

    # A comment a blank line away is nobody's.

    port: int = 0
'''
    assert settings_doc.comments(source) == {
        ("Example", "timeout"): "Seconds to wait, at most. 0: forever",
        ("Example", "name"): 'a "#" in a string is no comment: "x#y"',
        ("Example", "port"): "",
    }


ENDPOINT = EventEndpoint(name="hooks", url="https://hooks.example.com/")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("server.port", "5001", 5001),
    ("server.tls.min_version", "1.3", "1.3"),
    ("server.trusted_proxies", "10.0.0.0/8, 192.168.0.0/16", ("10.0.0.0/8", "192.168.0.0/16")),
    ("storage.delete_enabled", "false", False),
    ("storage.filesystem.metadata_threads", "8", 8),
    ("storage.s3.bucket", "images", "images"),
    ("auth.secret_key", "c2VjcmV0", "c2VjcmV0"),
    ("gc.upload_max_age", "600", 600),
    ("pull_through.tag_ttl", "60", 60),
    ("limits.rates", '{"PutImage": 50}', {"PutImage": 50.0}),
    ("events.endpoints", '[{"name": "hooks", "url": "https://hooks.example.com/"}]',
     (ENDPOINT,)),
])
def test_the_stated_environment_name_sets_the_setting(key: str, value: str,
                                                      expected: Any) -> None:
    found = re.fullmatch(r"`(REGISTRY_[A-Z0-9_]+)`.*", page_rows()[key][3])
    assert found, f"no environment name for {key} on docs/configuration.md"
    settings = load_settings(environ={found[1]: value})
    assert settings == replaced(Settings(), key.split("."), expected)
    assert settings != Settings()


def replaced(settings: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(settings, **{path[0]: value})
    inner = replaced(getattr(settings, path[0]), path[1:], value)
    return dataclasses.replace(settings, **{path[0]: inner})
