"""Run the app under uvicorn with graceful shutdown on SIGTERM."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import uvicorn

from registry.app import create_app
from registry.settings import Settings

log = logging.getLogger("registry")


def serve(settings: Settings) -> int:
    logging.basicConfig(level=settings.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    server = settings.server
    where = (str(Path(settings.storage.filesystem.root).resolve())
             if settings.storage.driver == "filesystem" else settings.storage.driver)
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        access_log=server.access_log,
        log_level=server.log_level,
        timeout_graceful_shutdown=server.graceful_timeout,
        server_header=False,
        log_config=None,
    )
    host = f"[{server.host}]" if ":" in server.host else server.host
    log.info("registry listening on http://%s:%d, storage %s (%s)",
             host, server.port, where, settings.storage.driver)
    uvicorn.Server(config).run()
    return 0
