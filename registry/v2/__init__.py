"""The OCI Distribution API under `/v2/`; every route is named for `url_path_for`."""

from __future__ import annotations

from starlette.routing import Route

from registry.v2 import base, blobs, catalog, manifests, referrers, tags, uploads


def routes() -> list[Route]:
    # The pulls' routes first (the router tries them in order, a regex each: a manifest GET
    # is most of the traffic); no path matches both a manifest route and a blob route, as a
    # reference or digest has no `/`. Upload routes come before the blob route: both end in
    # `/blobs/...`.
    return [
        Route("/v2/{name:path}/manifests/{reference}", manifests.get_manifest,
              methods=["GET", "HEAD"], name="manifest"),
        Route("/v2/", base.version_check, methods=["GET"], name="base"),
        Route("/v2/_catalog", catalog.catalog, methods=["GET"], name="catalog"),
        Route("/v2/{name:path}/blobs/uploads/", uploads.start_upload, methods=["POST"],
              name="uploads"),
        Route("/v2/{name:path}/blobs/uploads/{uuid}", uploads.upload_chunk, methods=["PATCH"],
              name="upload"),
        Route("/v2/{name:path}/blobs/uploads/{uuid}", uploads.complete_upload, methods=["PUT"]),
        Route("/v2/{name:path}/blobs/uploads/{uuid}", uploads.upload_status, methods=["GET"]),
        Route("/v2/{name:path}/blobs/uploads/{uuid}", uploads.cancel_upload, methods=["DELETE"]),
        Route("/v2/{name:path}/blobs/{digest}", blobs.get_blob, methods=["GET", "HEAD"],
              name="blob"),
        Route("/v2/{name:path}/blobs/{digest}", blobs.delete_blob, methods=["DELETE"]),
        Route("/v2/{name:path}/manifests/{reference}", manifests.put_manifest, methods=["PUT"]),
        Route("/v2/{name:path}/manifests/{reference}", manifests.delete_manifest,
              methods=["DELETE"]),
        Route("/v2/{name:path}/referrers/{digest}", referrers.list_referrers, methods=["GET"],
              name="referrers"),
        Route("/v2/{name:path}/tags/list", tags.list_tags, methods=["GET"], name="tags"),
    ]
