"""The configuration reference, `docs/configuration.md`, generated from the settings' own
definitions so that it cannot fall behind them:

    python -m registry.settings_doc > docs/configuration.md     # or: --write

Every field of the dataclasses in `registry/settings.py` is one row (key, type, default,
environment name, meaning), one section per settings table. A field's meaning is its comment
there: the comment lines directly above it (no blank line between) followed by the comment at
the end of its line. A table's introduction is the comment on the field that holds it, after
its class's docstring. Secrets (fields kept out of repr) show their default and never a value."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry import settings as settings_module
from registry.settings import ENV_PREFIX, Settings, _env_path

COMMAND = "python -m registry.settings_doc > docs/configuration.md"
PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted, as in `overrides`: "server.tls.min_version"; "events.endpoints[].url"
    type: str
    default: str  # Markdown
    env: str  # Markdown: the variable, or where the value goes instead
    meaning: str
    secret: bool


@dataclass(frozen=True, slots=True)
class Section:
    heading: str  # "[server.tls]", or "[[events.endpoints]]" for a list of tables
    about: str
    settings: tuple[Setting, ...]


def comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's comment text, for every annotated field of every
    class in `source`."""
    above: dict[int, str] = {}  # line -> text of a comment alone on its line
    after: dict[int, str] = {}  # line -> text of a comment ending a line of code
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0]
            text = token.string.lstrip("#").strip()
            (above if lines[row - 1].lstrip().startswith("#") else after)[row] = text
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                row = item.lineno - 1
                block: list[str] = []
                while row in above:
                    block.insert(0, above[row])
                    row -= 1
                end = item.end_lineno or item.lineno
                block += [after[r] for r in range(item.lineno, end + 1) if r in after]
                found[node.name, item.target.id] = " ".join(t for t in block if t)
    return found


def docstrings(source: str) -> dict[str, str]:
    return {node.name: " ".join((ast.get_docstring(node) or "").split())
            for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)}


@dataclass(frozen=True, slots=True)
class Table:
    """Where a settings dataclass sits, while walking them."""

    path: list[str]  # the loader's keys: ["events", "endpoints"]
    prefix: str  # of the keys shown: "events.endpoints[]" in an entry of a list of tables
    inside: str | None  # the variable whose JSON list holds it, in a list of tables
    entry: bool  # it is the list's entry: `[[events.endpoints]]`
    about: str


def sections() -> list[Section]:
    """Every settings table, depth first in the order of the fields."""
    source = inspect.getsource(settings_module)
    found: list[Section] = []
    _walk(Settings, Table([], "", None, False, ""), comments(source), docstrings(source), found)
    return found


def _walk(cls: type, table: Table, meanings: dict[tuple[str, str], str],
          docs: dict[str, str], found: list[Section]) -> None:
    """Add `cls`'s section (unless it is the top level and holds only tables), then those of
    its tables."""
    hints = typing.get_type_hints(cls)
    rows: list[Setting] = []
    tables: list[tuple[type, Table]] = []
    for item in dataclasses.fields(cls):
        hint, path = hints[item.name], [*table.path, item.name]
        key = f"{table.prefix}.{item.name}" if table.prefix else item.name
        meaning = _sentence(meanings.get((cls.__name__, item.name), ""))
        if dataclasses.is_dataclass(hint):
            tables.append((typing.cast(type, hint),
                           Table(path, key, table.inside, False, meaning)))
            continue
        env = env_name(path) if table.inside is None else None
        if table.inside is not None:  # a key of the JSON objects: JSON values, no form to say
            where = f"in `{table.inside}`"
        elif env is None:
            where = "none (the name would be read as another setting)"
        else:
            where = f"`{env}`{_env_form(hint)}"
        rows.append(Setting(key, type_name(hint), _default(item), where, meaning,
                            not item.repr))
        entry = _entry_type(hint)
        if entry is not None:
            tables.append((entry, Table(path, f"{key}[]", env or table.inside, True, meaning)))
    if rows or table.path:
        name = ".".join(table.path)
        heading = f"[[{name}]]" if table.entry else f"[{name}]" if name else "top level"
        doc = _sentence(docs.get(cls.__name__, ""))
        found.append(Section(heading, " ".join(t for t in (doc, table.about) if t), tuple(rows)))
    for inner, place in tables:
        _walk(inner, place, meanings, docs, found)


def _entry_type(hint: Any) -> type | None:
    """The entry dataclass of a list of tables (`tuple[EventEndpoint, ...]`), else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and dataclasses.is_dataclass(args[0]):
        return typing.cast(type, args[0])
    return None


def env_name(path: list[str]) -> str | None:
    """The variable the loader maps onto `path`, checked with the loader's own mapping (keys
    may contain `_`, so a name could be read as another setting's): None when there is none."""
    if _env_path(Settings, "_".join(path).split("_")) != path:
        return None
    return ENV_PREFIX + "_".join(path).upper()


def _env_form(hint: Any) -> str:
    if _entry_type(hint) is not None:
        return " (JSON list of objects)"
    if typing.get_origin(hint) is tuple:
        return " (comma-separated)"
    if typing.get_origin(hint) is dict:
        return " (JSON object)"
    return ""


def type_name(hint: Any) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args and len(args) == 2:
        return f"{type_name(next(a for a in args if a is not type(None)))} or unset"
    if _entry_type(hint) is not None:
        return "list of tables"
    if typing.get_origin(hint) is tuple:
        return f"list of {type_name(args[0])}s"
    if typing.get_origin(hint) is dict:
        return f"table of {type_name(args[1])}s"
    raise TypeError(f"no name for settings type {hint!r}: teach registry/settings_doc.py")


def _default(item: dataclasses.Field[Any]) -> str:
    value: Any = item.default
    if item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    if value is None:
        return "unset"
    if not item.repr and value:
        return "*(a secret: not shown)*"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _cell(text: str) -> str:
    """Comment text for a table cell or paragraph: `|` escaped, and `<` and `>` outside code
    spans, which Markdown would read as HTML."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def anchor(heading: str) -> str:
    """GitHub's anchor for a `## heading`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def render(found: list[Section] | None = None) -> str:
    found = sections() if found is None else found
    kinds = {s.type for section in found for s in section.settings}
    out = [
        "# Configuration reference",
        "",
        "Generated from the settings' definitions in `registry/settings.py`: do not edit it by",
        "hand. Regenerate it with",
        "",
        "```sh",
        COMMAND,
        "```",
        "",
        "(or `python -m registry.settings_doc --write`). A setting's meaning is the comment next",
        "to (or directly above) its field there: change that and run the command again.",
        "`tests/test_configuration_doc.py` fails while this page and the settings disagree.",
        "",
        "Settings come from (in rising priority) the defaults below, a TOML file (`--config",
        "FILE`), `REGISTRY_*` environment variables and the flags of `registry serve` (`--help`",
        "lists them). In the file a key goes in its section's table; in the environment its",
        "name is `REGISTRY_` and the dotted key in capitals, `_` for `.` (`server.tls.cert_file`",
        "is `REGISTRY_SERVER_TLS_CERT_FILE`). An unknown key in the file, or a value of the",
        "wrong type anywhere, stops start-up with one line naming the key; an unknown",
        "`REGISTRY_*` variable is one warning line. In the environment,",
        "",
    ]
    forms = [
        ("boolean", "a boolean is `true` or `false` (or `1`/`0`, `yes`/`no`, `on`/`off`);"),
        ("or unset", "a setting that may be unset (\"or unset\") is unset by an empty value (in "
                     "the file,\n  leave the key out);"),
        ("list of strings", "a list of strings is comma-separated (`a,b`; in the file an "
                            "array);"),
        ("table of", "a table is a JSON object (`{\"key\": 1}`; in the file an inline table);"),
        ("list of tables", "a list of tables is a JSON list of objects (in the file, `[[...]]`"
                           "\n  tables), whose keys have no variables of their own;"),
    ]
    out += [f"- {text}" for kind, text in forms if any(kind in k for k in kinds)]
    out += ["- anything else is written as in the file, without quotes.", "",
            "Secrets (marked so below) are masked by `registry config check`, which prints the",
            "effective configuration.", "", "Sections:", ""]
    out += [f"- [`{s.heading}`](#{anchor(s.heading)})" for s in found]
    out.append("")
    for section in found:
        out += [f"## `{section.heading}`", ""]
        if section.about:
            out += [_cell(section.about), ""]
        if section.settings:
            out += ["| Key | Type | Default | Environment | Meaning |", "|---|---|---|---|---|"]
            for s in section.settings:
                meaning = ("Secret. " if s.secret else "") + s.meaning
                out.append(f"| `{s.key}` | {s.type} | {_cell(s.default)} | {_cell(s.env)} | "
                           f"{_cell(meaning)} |")
            out.append("")
    return "\n".join(out)


def undocumented(found: list[Section]) -> list[str]:
    return [s.key for section in found for s in section.settings if not s.meaning] + \
        [section.heading for section in found if not section.about]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry.settings_doc",
                                     description="print the configuration reference")
    parser.add_argument("--write", action="store_true", help=f"write it to {PAGE}")
    args = parser.parse_args(argv)
    found = sections()
    missing = undocumented(found)
    if missing:
        print("settings without a comment in registry/settings.py: " + ", ".join(missing),
              file=sys.stderr)
        return 1
    page = render(found)
    if args.write:
        PAGE.write_text(page)
    else:
        sys.stdout.buffer.write(page.encode())
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
