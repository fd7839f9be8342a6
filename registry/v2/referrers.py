"""`GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject it is."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from auth.actions import PULL
from registry.v2.common import repository, store
from storage.content import mediatypes as mt
from storage.content.digest import Digest


async def list_referrers(request: Request) -> Response:
    name = await repository(request, PULL)
    subject = Digest.parse(request.path_params["digest"])
    artifact_type = request.query_params.get("artifactType") or None
    descriptors = await store(request).manifests.referrers(name, subject, artifact_type)
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return Response(json.dumps(index).encode(), media_type=mt.OCI_INDEX, headers=headers)
