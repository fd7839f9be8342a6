"""Pulls' GET and HEAD requests straight to their handler, past Starlette's inner layers.

A manifest GET by tag costs about 45 µs of our Python, and about 15 of them were Starlette's
exception middleware, router and request wrapper (a regex per route tried, two nested
exception wrappers, a send wrapper each). Manifest and blob GET/HEAD are most of a
registry's requests, so they come here first: the same route patterns (taken from the
Route objects themselves, so the two can never disagree), the same handler functions, the
same exception handlers looked up the same way. Everything else, and any path these routes
do not match exactly, goes through Starlette as before.

An exception the handlers do not cover (a bug) is re-raised for Starlette's outermost
middleware to answer 500, as on the usual path; so is one raised once the response started.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]

_METHODS = frozenset({"GET", "HEAD"})


class FastLane:
    ROUTES = ("manifest", "blob")  # the names of the routes it takes

    def __init__(self, app: ASGIApp, routes: list[Route],
                 exception_handlers: Mapping[Any, Handler]) -> None:
        self.app = app
        for route in routes:
            if route.methods is None or frozenset(route.methods) != _METHODS:
                raise ValueError(f"{route.path}: the fast lane takes GET and HEAD routes only")
        self.routes = [(route.path_regex, route.param_convertors, route.endpoint)
                       for route in routes]
        # Starlette's ExceptionMiddleware answers these; Exception (a bug) is for its
        # ServerErrorMiddleware, outside us.
        self.handlers = {cls: handler for cls, handler in exception_handlers.items()
                         if cls not in (Exception, 500)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        for regex, convertors, endpoint in self.routes:
            match = regex.match(path)
            if match is not None:
                params = {key: convertors[key].convert(value)
                          for key, value in match.groupdict().items()}
                scope["path_params"] = params
                scope["endpoint"] = endpoint  # as Starlette's router leaves them
                await self._answer(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, endpoint: Endpoint, scope: Scope, receive: Receive,
                      send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            exc.__traceback__ = None  # a reused exception instance would keep every traceback
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None
