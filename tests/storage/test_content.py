"""Pure content rules: digests, repository names and tags, manifest parsing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from storage.content import mediatypes as mt
from storage.content.digest import Digest
from storage.content.manifest import MAX_MANIFEST_SIZE, parse_manifest
from storage.content.names import check_name, check_tag
from storage.errors import DigestInvalid, ManifestInvalid, NameInvalid, TagInvalid

SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HEX64 = "0123456789abcdef" * 4
HEX128 = HEX64 * 2

# -- digests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "algorithm", "hex_"), [
    (f"sha256:{HEX64}", "sha256", HEX64),
    (f"sha256:{SHA256_EMPTY}", "sha256", SHA256_EMPTY),
    (f"sha512:{HEX128}", "sha512", HEX128),
])
def test_digest_parse_valid(text: str, algorithm: str, hex_: str) -> None:
    digest = Digest.parse(text)
    assert (digest.algorithm, digest.hex) == (algorithm, hex_)
    assert str(digest) == text
    assert Digest.parse(str(digest)) == digest


INVALID_DIGESTS = {
    "uppercase-hex": "sha256:" + HEX64.upper(),
    "mixed-case-hex": "sha256:" + HEX64[:-1] + "A",
    "uppercase-algorithm": f"SHA256:{HEX64}",
    "short": f"sha256:{HEX64[:-1]}",
    "long": f"sha256:{HEX64}0",
    "sha512-with-sha256-length": f"sha512:{HEX64}",
    "non-hex": "sha256:" + "g" * 64,
    "unknown-algorithm": "md5:" + "0" * 32,
    "unknown-grammatical-algorithm": f"sha256+b64u:{HEX64}",
    "missing-colon": f"sha256{HEX64}",
    "missing-algorithm": f":{HEX64}",
    "missing-hex": "sha256:",
    "empty": "",
    "over-256-chars": "sha256:" + "a" * 250,
    "leading-space": f" sha256:{HEX64}",
    "trailing-space": f"sha256:{HEX64} ",
    "two-colons": f"sha256:{HEX64}:",
}


@pytest.mark.parametrize("text", INVALID_DIGESTS.values(), ids=INVALID_DIGESTS.keys())
def test_digest_parse_invalid(text: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_digest_parse_rejects_trailing_newline() -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(f"sha256:{HEX64}\n")


def test_digest_of() -> None:
    assert Digest.of(b"") == Digest("sha256", SHA256_EMPTY)
    assert str(Digest.of(b"hello")) == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert Digest.of(b"hello", "sha512") == Digest("sha512", hashlib.sha512(b"hello").hexdigest())
    assert Digest.parse(str(Digest.of(b"x", "sha512"))) == Digest.of(b"x", "sha512")


# -- names and tags ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "a", "a/b/c", "a.b_c__d-e--f", "0a", "library/ubuntu", "a---b", "x" * 244,
    "/".join(["x" * 127] * 2),
])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", [
    "", "A", "a//b", "/a", "a/", "-a", "a_", "a/_b", "a___b", "a..b", "a.", "a b", "a:b",
    "x" * 256, "x" * 245, "x" * 255, "a/" + "x" * 245,  # a component a file name can't hold
])
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(NameInvalid):
        check_name(name)


@pytest.mark.parametrize("tag", ["latest", "v1.0_RC-1", "_x", "A", "x" * 128])
def test_check_tag_accepts(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["-x", ".x", "x" * 129, "a/b", "", "a:b", "a b", "é"])
def test_check_tag_rejects(tag: str) -> None:
    with pytest.raises(TagInvalid):
        check_tag(tag)


@pytest.mark.parametrize("check", [check_name, check_tag], ids=["name", "tag"])
def test_names_and_tags_reject_trailing_newline(check: Any) -> None:
    with pytest.raises((NameInvalid, TagInvalid)):
        check("latest\n")


# -- manifests ---------------------------------------------------------------------------------

D_CONFIG = f"sha256:{'1' * 64}"
D_LAYER = f"sha256:{'2' * 64}"
D_CHILD = f"sha256:{'3' * 64}"
D_SUBJECT = f"sha256:{'4' * 64}"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PLATFORM = {"architecture": "amd64", "os": "linux"}


def image(config_type: str = OCI_CONFIG, layer_type: str = OCI_LAYER) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "config": {"mediaType": config_type, "digest": D_CONFIG, "size": 7},
        "layers": [{"mediaType": layer_type, "digest": D_LAYER, "size": 32}],
    }


def index(child_type: str = mt.OCI_MANIFEST) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": child_type, "digest": D_CHILD, "size": 500, "platform": PLATFORM},
        ],
    }


# Each kind with a document that lacks a mediaType field.
KINDS: dict[str, dict[str, Any]] = {
    mt.OCI_MANIFEST: image(),
    mt.DOCKER_MANIFEST: image(DOCKER_CONFIG, DOCKER_LAYER),
    mt.OCI_INDEX: index(),
    mt.DOCKER_MANIFEST_LIST: index(mt.DOCKER_MANIFEST),
}


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def check_kind(media_type: str, raw: bytes, content_type: str | None) -> None:
    manifest = parse_manifest(raw, content_type)
    assert manifest.media_type == media_type
    if media_type in mt.INDEXES:
        assert manifest.is_index
        assert manifest.config is None
        assert [str(d.digest) for d in manifest.manifests] == [D_CHILD]
        assert manifest.manifests[0].platform == PLATFORM
        assert manifest.blobs == ()
    else:
        assert not manifest.is_index
        assert manifest.config is not None and str(manifest.config.digest) == D_CONFIG
        assert [(str(d.digest), d.size) for d in manifest.layers] == [(D_LAYER, 32)]
        assert [str(d.digest) for d in manifest.blobs] == [D_CONFIG, D_LAYER]


@pytest.mark.parametrize("media_type", KINDS)
def test_parse_detects_kind_from_content_type(media_type: str) -> None:
    check_kind(media_type, encode(KINDS[media_type]), media_type)
    check_kind(media_type, encode(KINDS[media_type]), f"{media_type.upper()}; charset=utf-8")


@pytest.mark.parametrize("content_type", [None, "", "application/json",
                                          "application/octet-stream"])
@pytest.mark.parametrize("media_type", KINDS)
def test_parse_detects_kind_from_media_type_field(media_type: str,
                                                  content_type: str | None) -> None:
    doc = {**KINDS[media_type], "mediaType": media_type}
    check_kind(media_type, encode(doc), content_type)


def test_parse_matching_content_type_and_field() -> None:
    doc = {**KINDS[mt.DOCKER_MANIFEST], "mediaType": mt.DOCKER_MANIFEST}
    check_kind(mt.DOCKER_MANIFEST, encode(doc), mt.DOCKER_MANIFEST)


@pytest.mark.parametrize(("media_type", "doc"), [
    (mt.OCI_MANIFEST, image()), (mt.OCI_INDEX, index()),
], ids=["manifest", "index"])
def test_parse_detects_oci_kind_by_structure(media_type: str, doc: dict[str, Any]) -> None:
    check_kind(media_type, encode(doc), None)
    check_kind(media_type, encode(doc), "application/json")


def _invalid(raw: bytes, content_type: str | None) -> str:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(raw, content_type)
    return caught.value.message


def test_parse_rejects_content_type_and_field_mismatch() -> None:
    doc = {**image(), "mediaType": mt.OCI_MANIFEST}
    assert "does not match" in _invalid(encode(doc), mt.DOCKER_MANIFEST)
    doc = {**index(), "mediaType": mt.OCI_INDEX}
    assert "does not match" in _invalid(encode(doc), mt.OCI_MANIFEST)


@pytest.mark.parametrize("content_type", [mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED])
def test_parse_rejects_schema1_by_content_type(content_type: str) -> None:
    assert "schema 1" in _invalid(encode(image()), content_type)
    assert "schema 1" in _invalid(b"not even json", content_type)


def test_parse_rejects_schema1_by_document() -> None:
    schema1 = {"schemaVersion": 1, "name": "a", "tag": "latest", "fsLayers": [], "history": []}
    assert "schema 1" in _invalid(encode(schema1), None)
    assert "schema 1" in _invalid(encode(schema1), "application/json")
    assert "schema 1" in _invalid(encode({**schema1, "schemaVersion": 2,
                                          "mediaType": mt.DOCKER_SCHEMA1}), None)


@pytest.mark.parametrize("raw", [b"", b"{", b'{"schemaVersion": 2,}', b"\xff\xfe{}", b"{'a': 1}"],
                         ids=["empty", "truncated", "trailing-comma", "not-utf8", "single-quotes"])
def test_parse_rejects_invalid_json(raw: bytes) -> None:
    _invalid(raw, mt.OCI_MANIFEST)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"manifest"', b"true"])
def test_parse_rejects_non_object_json(raw: bytes) -> None:
    assert "object" in _invalid(raw, mt.OCI_MANIFEST)


@pytest.mark.parametrize("version", [None, 3, "2"], ids=["missing", "three", "string"])
def test_parse_rejects_other_schema_versions(version: object) -> None:
    doc = image()
    if version is None:
        del doc["schemaVersion"]
    else:
        doc["schemaVersion"] = version
    _invalid(encode(doc), mt.OCI_MANIFEST)


def test_parse_rejects_unknown_media_types() -> None:
    assert "unsupported" in _invalid(encode(image()), "application/vnd.example+json")
    doc = {**image(), "mediaType": "application/vnd.example+json"}
    assert "unsupported" in _invalid(encode(doc), None)


def test_parse_rejects_undeclared_unrecognisable_document() -> None:
    _invalid(encode({"schemaVersion": 2, "layers": []}), None)


def _with_layer(**changes: Any) -> bytes:
    doc = image()
    layer = {**doc["layers"][0], **changes}
    doc["layers"] = [{k: v for k, v in layer.items() if v is not None}]
    return encode(doc)


BAD_DESCRIPTORS = {
    "missing-digest": _with_layer(digest=None),
    "missing-media-type": _with_layer(mediaType=None),
    "missing-size": _with_layer(size=None),
    "negative-size": _with_layer(size=-1),
    "string-size": _with_layer(size="32"),
    "float-size": _with_layer(size=32.0),
    "bool-size": _with_layer(size=True),
    "bad-digest": _with_layer(digest="sha256:xyz"),
    "uppercase-digest": _with_layer(digest=D_LAYER.upper()),
    "unknown-algorithm": _with_layer(digest="md5:" + "0" * 32),
    "urls-not-a-list": _with_layer(urls="https://example.com/layer"),
    "bad-annotations": _with_layer(annotations={"a": 1}),
    "missing-config": encode({k: v for k, v in image().items() if k != "config"}),
    "layers-not-a-list": encode({**image(), "layers": {}}),
    "bad-child-digest": encode({**index(), "manifests": [{"mediaType": mt.OCI_MANIFEST,
                                                          "digest": "sha256:1", "size": 1}]}),
    "child-not-an-object": encode({**index(), "manifests": ["sha256:" + "3" * 64]}),
    "manifests-not-a-list": encode({**index(), "manifests": {}}),
    "bad-subject": encode({**image(), "subject": {"mediaType": mt.OCI_MANIFEST, "size": 1}}),
}


@pytest.mark.parametrize("raw", BAD_DESCRIPTORS.values(), ids=BAD_DESCRIPTORS.keys())
def test_parse_rejects_bad_descriptors(raw: bytes) -> None:
    content_type = mt.OCI_INDEX if b'"manifests"' in raw else mt.OCI_MANIFEST
    _invalid(raw, content_type)


def test_parse_rejects_docker_manifest_without_layers() -> None:
    doc = {**image(DOCKER_CONFIG, DOCKER_LAYER), "layers": []}
    _invalid(encode(doc), mt.DOCKER_MANIFEST)


def test_parse_accepts_oci_artifact_without_layers() -> None:
    doc = {**image(), "layers": []}
    assert parse_manifest(encode(doc), mt.OCI_MANIFEST).layers == ()


def test_parse_rejects_oversized_manifest() -> None:
    doc = {**image(), "annotations": {"pad": "x" * MAX_MANIFEST_SIZE}}
    _invalid(encode(doc), mt.OCI_MANIFEST)


def test_parse_preserves_raw_bytes_and_digests_them() -> None:
    # Odd spacing, key order, escapes and a trailing newline: none of it may be normalised.
    raw = (
        b'{"layers":[{"size":32,"digest":"' + D_LAYER.encode() + b'",'
        b'"mediaType":"' + OCI_LAYER.encode() + b'"}],\n\t"schemaVersion" :  2 ,'
        b'"config":{"mediaType":"' + OCI_CONFIG.encode() + b'","size":7,'
        b'"digest":"' + D_CONFIG.encode() + b'"},'
        b'"annotations":{"caf\\u00e9":"\xc3\xa9t\xc3\xa9"}}\n'
    )
    manifest = parse_manifest(raw, mt.OCI_MANIFEST)
    assert manifest.raw == raw
    assert manifest.digest == Digest("sha256", hashlib.sha256(raw).hexdigest())
    assert manifest.annotations == {"café": "été"}
    sha512 = parse_manifest(raw, mt.OCI_MANIFEST, "sha512")
    assert sha512.digest == Digest("sha512", hashlib.sha512(raw).hexdigest())


def test_parse_subject_artifact_type_and_annotations() -> None:
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": D_SUBJECT, "size": 1234}
    doc = {
        **image(config_type=mt.OCI_EMPTY), "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom+json", "subject": subject,
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    manifest = parse_manifest(encode(doc), mt.OCI_MANIFEST)
    assert manifest.subject is not None
    assert (manifest.subject.media_type, str(manifest.subject.digest), manifest.subject.size) \
        == (mt.OCI_MANIFEST, D_SUBJECT, 1234)
    assert manifest.artifact_type == "application/vnd.example.sbom+json"
    assert manifest.effective_artifact_type == "application/vnd.example.sbom+json"
    assert manifest.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}


def test_parse_artifact_type_falls_back_to_config_media_type() -> None:
    manifest = parse_manifest(encode(image(config_type="application/vnd.example.config")), None)
    assert manifest.artifact_type is None
    assert manifest.subject is None
    assert manifest.annotations == {}
    assert manifest.effective_artifact_type == "application/vnd.example.config"


def test_parse_index_subject_and_child_fields() -> None:
    doc = index()
    doc["manifests"][0] |= {"artifactType": "application/vnd.example",
                            "annotations": {"k": "v"}}
    doc |= {"subject": {"mediaType": mt.OCI_MANIFEST, "digest": D_SUBJECT, "size": 1},
            "artifactType": "application/vnd.example.index", "annotations": {"a": "b"}}
    manifest = parse_manifest(encode(doc), mt.OCI_INDEX)
    child = manifest.manifests[0]
    assert (child.artifact_type, child.annotations) == ("application/vnd.example", {"k": "v"})
    assert manifest.subject is not None and str(manifest.subject.digest) == D_SUBJECT
    assert manifest.artifact_type == "application/vnd.example.index"
    assert manifest.annotations == {"a": "b"}


def test_foreign_layers_with_urls_are_not_required_blobs() -> None:
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    nondistributable = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    digests = [f"sha256:{c * 64}" for c in "56789"]
    doc = image()
    doc["layers"] = [
        {"mediaType": foreign, "digest": digests[0], "size": 1,
         "urls": ["https://example.com/base"]},
        {"mediaType": nondistributable, "digest": digests[1], "size": 1,
         "urls": ["https://example.com/other"]},
        {"mediaType": foreign, "digest": digests[2], "size": 1},  # no urls: must be pushed
        {"mediaType": OCI_LAYER, "digest": digests[3], "size": 1,
         "urls": ["https://example.com/mirror"]},  # urls on a normal layer change nothing
        {"mediaType": OCI_LAYER, "digest": digests[4], "size": 1},
    ]
    manifest = parse_manifest(encode(doc), mt.OCI_MANIFEST)
    assert len(manifest.layers) == 5
    assert manifest.layers[0].urls == ("https://example.com/base",)
    assert [str(d.digest) for d in manifest.blobs] == [D_CONFIG, *digests[2:]]
