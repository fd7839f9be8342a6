"""The one JSON reader for outside input, and the bounds the content rules build on it."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from storage import paths, records
from storage.content.jsontext import MAX_DEPTH, JsonInvalid, depth, loads
from storage.content.manifest import MAX_DESCRIPTOR_SIZE, parse_manifest
from storage.content.names import MAX_COMPONENT_LENGTH, check_name
from storage.errors import ManifestInvalid, NameInvalid, StorageUnavailable

HEX64 = "0123456789abcdef" * 4
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("text", [
    nested(MAX_DEPTH + 1), nested(1000), nested(100_000), '{"a":' * 1000 + "1" + "}" * 1000,
    '{"x": [' + "{}," * 100 + nested(MAX_DEPTH) + "]}",
])
def test_nesting_beyond_the_bound_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(JsonInvalid, match="deeper than"):
        loads(text)


def test_nesting_to_the_bound_parses() -> None:
    assert loads(nested(MAX_DEPTH)) == loads(json.dumps(json.loads(nested(MAX_DEPTH))))
    assert loads(nested(MAX_DEPTH).encode()) is not None


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[" * 5000, "t": 'a\\"[{' * 100, "list": [[1]] * 100})
    assert depth(text) == 3
    assert loads(text)["s"] == "[" * 5000


@pytest.mark.parametrize(("text", "problem"), [
    ("9" * 5000, "digits"), ("-" + "9" * 101, "digits"), ('{"size": NaN}', "NaN"),
    ("[Infinity]", "Infinity"), ("[-Infinity]", "Infinity"), ('{"a": ', "Expecting"),
    (b"\xff\xfe\xfa", "UTF"), ("", "Expecting"),
])
def test_numbers_and_syntax_beyond_json_are_one_error(text: str | bytes, problem: str) -> None:
    with pytest.raises(JsonInvalid, match=problem):
        loads(text)


def test_integers_to_the_bound_parse() -> None:
    assert loads("9" * 100) == int("9" * 100)
    assert loads('{"size": 9223372036854775807, "f": 1.5e300}')["f"] == 1.5e300


def test_the_worst_document_costs_time_linear_in_its_size() -> None:
    """4 MiB (the manifest bound) of the shapes that cost most: refused or parsed quickly."""
    shapes = [nested(2 * 1024 * 1024), "[" + "[]," * 1_398_000 + "[]]",
              json.dumps(["[{" * 100] * 10_000)]
    for text in shapes:
        started = time.perf_counter()
        with contextlib.suppress(JsonInvalid):
            loads(text)
        assert time.perf_counter() - started < 5


def _manifest(size: object = 2, extra: str = "") -> bytes:
    return (f'{{"schemaVersion": 2, "mediaType": "{OCI_MANIFEST}", "config": {{"mediaType": '
            f'"application/vnd.oci.image.config.v1+json", "digest": "sha256:{HEX64}", '
            f'"size": {size}}}, "layers": []{extra}}}').encode()


@pytest.mark.parametrize("raw", [
    _manifest(extra=f', "x": {nested(1000)}'), _manifest("9" * 5000), _manifest(10**30),
    _manifest(MAX_DESCRIPTOR_SIZE + 1), _manifest("NaN"),
])
def test_manifest_beyond_bounds_is_manifest_invalid(raw: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw, OCI_MANIFEST)


def test_descriptor_size_bound_is_the_largest_s3_object() -> None:
    assert MAX_DESCRIPTOR_SIZE == 5 * 1024**4
    manifest = parse_manifest(_manifest(MAX_DESCRIPTOR_SIZE), OCI_MANIFEST)
    assert manifest.config is not None and manifest.config.size == MAX_DESCRIPTOR_SIZE
    # Every size a 4 MiB manifest can hold, summed, still fits ECR's Long.
    assert (4 * 1024 * 1024 // 60) * MAX_DESCRIPTOR_SIZE < 2**63


def test_stored_record_beyond_bounds_is_corrupt_not_a_crash() -> None:
    with pytest.raises(StorageUnavailable):
        records.load(f'{{"a": {nested(1000)}}}'.encode(), "k")


def test_every_suffixed_key_of_a_longest_component_fits_a_file_name() -> None:
    component = "x" * MAX_COMPONENT_LENGTH
    check_name(component)
    check_name(f"a/{component}")
    for key in (paths.catalog_marker(component), paths.template(component),
                paths.pull_through_rule(component), paths.catalog_marker(f"a/{component}/b")):
        assert max(len(part.encode()) for part in key.split("/")) <= paths.FILE_NAME_MAX
    for name in ("x" * (MAX_COMPONENT_LENGTH + 1), f"a/{'x' * (MAX_COMPONENT_LENGTH + 1)}/b"):
        with pytest.raises(NameInvalid, match="longer than"):
            check_name(name)
