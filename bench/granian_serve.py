"""Our registry served by Granian instead of uvicorn: the bench's `ours-fs-granian` target.

Not a product option: bench/run.py uses it to measure whether Granian would be worth
supporting (issue 10: choose the server stack by measurement). It takes `registry serve`'s
options, builds the same app and runs it under Granian's embedded server on uvloop. Needs
`pip install granian`.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

from registry.app import create_app
from registry.cli import build_parser, settings_from
from registry.server import tune_allocator


def main() -> int:
    args = build_parser().parse_args(["serve", *sys.argv[1:]])
    settings = settings_from(args)
    if settings.server.tune_malloc:
        tune_allocator()
    app = create_app(settings)
    server = Server(app, address=settings.server.host, port=settings.server.port,
                    interface=Interfaces.ASGI, log_enabled=False, backlog=1024,
                    websockets=False)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
