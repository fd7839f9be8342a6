"""Every storage key the registry uses, built in one place.

Keys are `/`-separated and relative to the driver's root (a directory or a bucket prefix)::

    blobs/
      sha256/ab/<hex>                          blob and manifest bytes, global, content-addressed
    repositories/
      <name>/                                  a repository (its name may contain `/`)
        _layers/sha256/<hex>                   link: the repository may serve this blob
        _manifests/
          revisions/sha256/<hex>               link + record (media type, size, pushed at, subject)
          revisions/sha256/<hex>+tags/<tag>    index: the tag pointed here when it was written
          tags/<tag>                           record: the digest the tag points at
          pulls/sha256/<hex>                   when the manifest was last pulled (hourly at most)
          referrers/sha256/<subject-hex>/sha256/<hex>
                                               descriptor of a manifest whose subject is <subject>
        _policy                                the repository policy document
        _lifecycle                             the lifecycle policy document
        _lifecycle-state                       when the policy last ran, and what it expired
        _lifecycle-preview                     the last preview's results
        _inuse/sha256/<hex>/<holder>           the image is in use by <holder>: never expired
        _gc                                    a GC pass over the repository is in progress
        _manifests/upstream/<tag>              pull-through cache: when the tag was last checked
        _replication/<destination>/sha256/<hex>
                                               replication status of the image (COMPLETE/FAILED)
        _replication/<destination>/sha256/<hex>+jobs/<event id>
                                               a copy of the image is queued (IN_PROGRESS)
    catalog/
      <name>+repository                        one marker per repository, for the catalog listing
    iam/
      users/<name>                             user record (password hash, groups, policies,
                                               disabled, the tokens' credential generation)
      groups/<name>                            group record (policies)
      access-keys/<id>                         access key (user, encrypted secret)
      signing-keys/<kid>                       token signing key (encrypted private key)
    registry/
      policy                                   the registry policy document
      replication                              the replication configuration (rules)
      write-probe-<host>-<pid>                 /readyz's write test after writes failed (gone
                                               again at once)
    gc/
      tombs/sha256/<hex>                       GC is about to delete this blob (storage/sweeps.py)
    pull-through/
      <prefix>+rule                            a pull-through cache rule (ROOT+rule: every name)
    secrets/
      ecr-pullthroughcache/<name>              upstream credentials, sealed
    taskdefs/
      <family>                                 images a task definition family holds in use
    audit/
      <yyyy>/<mm>/<dd>/<time-ns>-<random>      one audit entry (who, what, when, from where)
    leases/
      <job>                                    which replica runs a periodic job, and until when
    templates/
      <prefix>+template                        repository creation template (ROOT+template: all)
    uploads/
      <uuid>/info                              upload session record (repository, algorithm, start)
      <uuid>/data                              the bytes received so far

Repository name components never start with `_` (the name grammar forbids it), so `_layers` and
`_manifests` cannot collide with a nested repository. Catalog markers end in `+repository`: `+`
sorts before every character a name may contain (`-` is the lowest), so the key order of the
markers is exactly the lexical order of the names, and one prefix listing with a start-after
marker pages the catalog. The same trick keeps a revision's tag index right behind the revision
in a listing of `revisions/`: one listing pages the images of a repository with their tags. The
tag record is the truth; an index entry counts only while the tag record still names its digest
(a crash between the writes leaves a stale entry, never a missing one). Upload sessions are
global (their record names the repository) so that stale sessions can be found and purged with
one listing.

A marker's file name is a name's last component plus its suffix, so the name grammar bounds
components (`MAX_NAME_COMPONENT`, 244 characters) to keep every key component within the 255
bytes a filesystem allows in one file name (S3 has no such limit, but a key must work on every
backend). The suffix cannot move down a folder level instead (`<name>/+repository`): `a/`
sorts after `a-b/` though `a` sorts before `a-b`, and the catalog's order would break.
"""

from __future__ import annotations

from storage.content.digest import Digest

BLOBS = "blobs"
REPOSITORIES = "repositories"
CATALOG = "catalog"
UPLOADS = "uploads"
IAM = "iam"
IAM_KINDS = ("users", "groups", "access-keys", "signing-keys")
CATALOG_SUFFIX = "+repository"
TEMPLATE_SUFFIX = "+template"
RULE_SUFFIX = "+rule"
# The longest file name a filesystem takes (NAME_MAX on Linux, macOS, Windows), and so the
# longest repository name component whose suffixed markers still fit one.
FILE_NAME_MAX = 255
MAX_NAME_COMPONENT = FILE_NAME_MAX - max(map(len, (CATALOG_SUFFIX, TEMPLATE_SUFFIX,
                                                   RULE_SUFFIX)))


def blob(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}"


def revision(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}"


def revisions(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/"


TAG_INDEX = "+tags/"


def tag_index(name: str, digest: Digest) -> str:
    """Prefix of the tags indexed under a revision: sorts right after the revision's own key."""
    return revision(name, digest) + TAG_INDEX


def tag_index_entry(name: str, digest: Digest, tag_name: str) -> str:
    return tag_index(name, digest) + tag_name


def pull_record(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/pulls/{digest.algorithm}/{digest.hex}"


def tags(name: str) -> str:
    """Prefix under which every tag of a repository is one key (tags never contain `/`)."""
    return f"{REPOSITORIES}/{name}/_manifests/tags/"


def tag(name: str, tag_name: str) -> str:
    return tags(name) + tag_name


def referrers(name: str, subject: Digest) -> str:
    return (
        f"{REPOSITORIES}/{name}/_manifests/referrers/{subject.algorithm}/{subject.hex}/"
    )


def referrer(name: str, subject: Digest, digest: Digest) -> str:
    return referrers(name, subject) + f"{digest.algorithm}/{digest.hex}"


def catalog() -> str:
    return f"{CATALOG}/"


def catalog_marker(name: str) -> str:
    return f"{CATALOG}/{name}{CATALOG_SUFFIX}"


def name_from_catalog_marker(key: str) -> str:
    return key[len(CATALOG) + 1 : -len(CATALOG_SUFFIX)]


def upload_info(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}/info"


def upload_data(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}/data"


def upload(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}/"


def repository_policy(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_policy"


def lifecycle_policy(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_lifecycle"


def lifecycle_state(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_lifecycle-state"


def lifecycle_preview(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_lifecycle-preview"


def in_use_marks(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_inuse/"


def in_use_holders(name: str, digest: Digest) -> str:
    return f"{in_use_marks(name)}{digest.algorithm}/{digest.hex}/"


def in_use_mark(name: str, digest: Digest, holder: str) -> str:
    """One key per holder (a task family, `cli`, ...): the image stays marked while any holds it."""
    return in_use_holders(name, digest) + holder


def registry_policy() -> str:
    return "registry/policy"


def write_probe(process: str) -> str:
    """`process`: host name and pid, so replicas' probes never meet."""
    return f"registry/write-probe-{process}"


def gc_tomb(digest: Digest) -> str:
    return f"gc/tombs/{digest.algorithm}/{digest.hex}"


def gc_tombs() -> str:
    return "gc/tombs/"


def gc_sweep(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_gc"


def layers(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_layers/"


def pull_through_rules() -> str:
    return "pull-through/"


def pull_through_rule(prefix: str) -> str:
    return f"pull-through/{prefix}{RULE_SUFFIX}"


def prefix_from_rule(key: str) -> str:
    return key[len("pull-through/"): -len(RULE_SUFFIX)]


def upstream_secret(name: str) -> str:
    return f"secrets/ecr-pullthroughcache/{name}"


def upstream_check(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/upstream/{tag}"


def lease(job: str) -> str:
    return f"leases/{job}"


TEMPLATES = "templates"


def templates() -> str:
    return f"{TEMPLATES}/"


def template(prefix: str) -> str:
    return f"{TEMPLATES}/{prefix}{TEMPLATE_SUFFIX}"


def prefix_from_template(key: str) -> str:
    return key[len(TEMPLATES) + 1 : -len(TEMPLATE_SUFFIX)]


def iam_records(kind: str) -> str:
    """Prefix under which every record of one IAM kind is one key (names never contain `/`)."""
    if kind not in IAM_KINDS:
        raise ValueError(f"unknown IAM record kind {kind!r}")
    return f"{IAM}/{kind}/"


def iam_record(kind: str, name: str) -> str:
    return iam_records(kind) + name


def replication_configuration() -> str:
    return "registry/replication"


def replication_status(name: str, destination: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_replication/{destination}/{digest.algorithm}/{digest.hex}"


JOBS = "+jobs/"


def replication_jobs(name: str, destination: str, digest: Digest) -> str:
    """Prefix of the queued copies of an image to a destination, one key per job (event id)."""
    return replication_status(name, destination, digest) + JOBS


def replication_job(name: str, destination: str, digest: Digest, event_id: str) -> str:
    return replication_jobs(name, destination, digest) + event_id


def replication(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_replication/"
