#!/usr/bin/env bash
# Refresh the lock files from pyproject.toml (and build.in): the newest releases that fit its
# ranges, with the hashes of every file, resolved for Python 3.11+ on every platform at once.
#     bash requirements/lock.sh                  # everything to its newest fitting release
#     bash requirements/lock.sh -P uvicorn       # only uvicorn; the rest stays as locked
# runtime.txt (the server) is test.txt (server and tests) less the test tools, same versions.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/pip" install -q "uv==$UV_VERSION"
compile=("$tool/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes
         --custom-compile-command "bash requirements/lock.sh")
upgrade=(--upgrade)
(($#)) && upgrade=("$@")
"${compile[@]}" "${upgrade[@]}" pyproject.toml requirements/build.in --extra test \
    -o requirements/test.txt
"${compile[@]}" pyproject.toml requirements/build.in -c requirements/test.txt \
    -o requirements/runtime.txt
