"""docs/openapi.yaml describes exactly what the app serves: every Starlette route and method,
every ECR operation; it is valid OpenAPI 3.1, and its ECR part is what the generator makes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from openapi_spec_validator import validate
from starlette.routing import Route

from registry.app import create_app
from registry.ecr import OPERATIONS, TARGET_PREFIX
from registry.settings import load_settings
from tests.fuzz import ecr_openapi

METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")


def load_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ecr_openapi.DOCUMENT.read_text())
    return document


def described(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(path, METHOD) of every operation the document describes, ECR ones as `POST /` with
    their target: `("/#<target>", "POST")`."""
    return {(path, method.upper()) for path, item in document["paths"].items()
            for method in item if method in METHODS}


def served(tmp_path: Path) -> set[tuple[str, str]]:
    """(path template, METHOD) of every route `create_app` wires, `{name:path}` written as
    OpenAPI writes it (`{name}`). Starlette answers HEAD wherever it answers GET; such a HEAD
    needs no entry of its own, and is counted as described when GET is."""
    settings = load_settings(environ={}, overrides={"storage.filesystem.root": str(tmp_path)})
    app = create_app(settings)
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: describe this kind of route too"
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            routes.add((path, method))
    return routes


def test_the_document_is_valid_openapi_3_1() -> None:
    document = load_document()
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises with the first problem


def test_every_route_the_app_serves_is_described(tmp_path: Path) -> None:
    documented = described(load_document())
    missing = sorted(
        (path, method) for path, method in served(tmp_path)
        if (path, method) not in documented
        and not (method == "HEAD" and (path, "GET") in documented))
    assert not missing, f"routes served but not in docs/openapi.yaml: {missing}"


def test_everything_described_is_served(tmp_path: Path) -> None:
    routes = served(tmp_path)
    extra = sorted((path, method) for path, method in described(load_document())
                   if not path.startswith(ecr_openapi.PATH_PREFIX)
                   and (path, method) not in routes)
    assert not extra, f"described in docs/openapi.yaml but not served: {extra}"


def test_every_ecr_operation_is_described_and_no_other() -> None:
    document = load_document()
    targets = {path.removeprefix(ecr_openapi.PATH_PREFIX)
               for path in document["paths"] if path.startswith(ecr_openapi.PATH_PREFIX)}
    assert targets == {TARGET_PREFIX + name for name in OPERATIONS}
    for path, item in document["paths"].items():
        if path.startswith(ecr_openapi.PATH_PREFIX):
            assert list(item) == ["post"], path
            header = item["post"]["parameters"][0]
            assert header["name"] == "X-Amz-Target"
            assert header["schema"]["const"] == path.removeprefix(ecr_openapi.PATH_PREFIX)


def test_the_ecr_part_is_as_generated() -> None:
    current = ecr_openapi.DOCUMENT.read_text()
    if ecr_openapi.generated(current) != current:
        pytest.fail("docs/openapi.yaml's ECR part differs from botocore's model as installed: "
                    "run `python -m tests.fuzz.ecr_openapi` (or edit the generator)")
