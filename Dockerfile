# ECR-compatible OCI registry: filesystem storage under /data, listening on :5000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REGISTRY_SERVER_HOST=0.0.0.0 \
    REGISTRY_SERVER_PORT=5000 \
    REGISTRY_STORAGE_FILESYSTEM_ROOT=/data \
    REGISTRY_AUTH_ALLOW_ANONYMOUS=true
# For anything beyond a trusted network, enable authentication instead:
#   -e REGISTRY_AUTH_ENABLED=true -e REGISTRY_AUTH_SECRET_KEY=<base64 of 32 bytes>

WORKDIR /app
# The locked dependencies (hash-checked) in a layer of their own: editing the source does not
# reinstall them. The lock holds the build backend too, so the package builds offline below.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --no-cache-dir -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY storage ./storage
COPY auth ./auth
COPY conformance ./conformance
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build *.egg-info \
    && useradd --system --uid 10001 --home-dir /data registry \
    && mkdir -p /data && chown registry /data

USER registry
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import os,ssl,urllib.request; tls=bool(os.environ.get('REGISTRY_SERVER_TLS_CERT_FILE')); urllib.request.urlopen('%s://127.0.0.1:%s/readyz' % ('https' if tls else 'http', os.environ.get('REGISTRY_SERVER_PORT','5000')), timeout=2, context=ssl._create_unverified_context() if tls else None)" || exit 1
CMD ["registry", "serve"]
