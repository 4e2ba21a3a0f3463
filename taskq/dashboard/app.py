"""The dashboard's web side: one page, one server-sent-events stream, two actions, and a
page per task read from the app's state store (when it has one).

Thin on purpose: the numbers come from feed.py's threads (which own the broker
connections), and the actions are dead.py's replay and a queue purge, run on the feed's
counts thread. This side only turns state into SSE messages and HTTP answers.

Server-sent events rather than websockets: the traffic is one way, EventSource reconnects
by itself (``retry:``), and it is plain HTTP through any proxy.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from taskq import settings
from taskq.dashboard import guard
from taskq.dashboard.feed import Action, Feed
from taskq.dashboard.state import LOG_LINES_KEPT, DashboardState
from taskq.errors import TaskqError, UserActionError
from taskq.state.records import as_json, pending

if TYPE_CHECKING:
    from taskq.app import App

STATIC = Path(__file__).parent / "static"
CLIENT_BACKLOG = settings.DASHBOARD_CLIENT_BACKLOG
COALESCE = settings.DASHBOARD_COALESCE
KEEPALIVE = settings.DASHBOARD_KEEPALIVE
ACTION_TIMEOUT = settings.DASHBOARD_ACTION_TIMEOUT


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=repr)}\n\n"


def state_message(snapshot: dict[str, Any]) -> str:
    """The state, stamped with our clock so the page can age "last seen" without trusting its own."""
    return sse("state", {**snapshot, "server_time": time.time()})


class Hub:
    """Fans the state out to every connected browser; woken from the feed threads.

    One snapshot per change, shared by all clients, each of which has a bounded queue: a
    browser that stops reading is dropped rather than holding memory, and its
    EventSource reconnects to a fresh snapshot.
    """

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.clients: set[asyncio.Queue[str | None]] = set()
        self.wake = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_state: dict[str, Any] | None = None
        self.last_log = 0
        self.closing = False

    def notify_threadsafe(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.wake.set)
            except RuntimeError:  # the loop closed between the check and the call: shutting down
                pass

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)  # at least once a second: workers expire
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            self.push()
            await asyncio.sleep(COALESCE)

    def push(self) -> None:
        snapshot = self.state.snapshot()
        if snapshot != self.last_state:
            self.last_state = snapshot
            self.broadcast(state_message(snapshot))
        lines = self.state.logs_after(self.last_log)
        if lines:
            self.last_log = lines[-1]["n"]
            self.broadcast(sse("logs", lines))

    def broadcast(self, message: str) -> None:
        for client in list(self.clients):
            try:
                client.put_nowait(message)
            except asyncio.QueueFull:
                self.drop(client)

    def drop(self, client: asyncio.Queue[str | None]) -> None:
        self.clients.discard(client)
        while not client.empty():
            client.get_nowait()
        client.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[str | None]:
        client: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_BACKLOG)
        if self.closing:
            client.put_nowait(None)
            return client
        client.put_nowait(state_message(self.last_state or self.state.snapshot()))
        # The tail up to the last push; newer lines come with the next push, to every client alike.
        recent = [line for line in self.state.logs_after(0, limit=LOG_LINES_KEPT) if line["n"] <= self.last_log][-200:]
        if recent:
            client.put_nowait(sse("logs", recent))
        self.clients.add(client)
        return client

    def close(self) -> None:
        """End every stream: uvicorn waits for open responses before it stops, and these never end by themselves."""
        self.closing = True
        for client in list(self.clients):
            self.drop(client)

    def close_soon(self) -> None:
        """``close`` from a signal handler: on the loop, between its callbacks."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.close)


def create_app(app: App, queue_names: list[str], *, allowed_hosts: list[str], token: str | None = None) -> Starlette:
    """The ASGI app for ``app``'s ``queue_names``; the feed threads run while it is served.

    ``allowed_hosts``: the Host names requests may use (guard.py); ``token``: required of
    every request when given.
    """
    feed = Feed(app, queue_names)
    hub = Hub(feed.state)
    feed.state.notify = hub.notify_threadsafe

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        feed.start()
        pusher = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            pusher.cancel()
            hub.close()
            await asyncio.to_thread(feed.stop)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def events(request: Request) -> Response:
        client = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"  # EventSource reconnects 2 s after losing us
                while True:
                    try:
                        message = await asyncio.wait_for(client.get(), timeout=KEEPALIVE)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if message is None:
                        return
                    yield message
            finally:
                hub.clients.discard(client)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def state(request: Request) -> Response:
        return JSONResponse(feed.state.snapshot())

    async def act(request: Request, kind: str) -> Response:
        # Only JSON bodies (guard.py has already refused another site's requests).
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send application/json"}, status_code=415)
        try:
            body = await request.json()
            queue_name = str(body["queue"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"queue": NAME, ...}'}, status_code=400)
        if kind == "purge" and body.get("confirm") != queue_name:
            return JSONResponse({"error": "purge needs confirm: the queue's name"}, status_code=400)
        task_id = body.get("task_id") if kind == "replay" else None
        future = feed.submit(Action(kind, queue_name, str(task_id) if task_id else None))
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), ACTION_TIMEOUT)
        except UserActionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except (TaskqError, asyncio.TimeoutError) as exc:
            return JSONResponse({"error": str(exc) or "timed out"}, status_code=503)
        return JSONResponse(result)

    async def task_page(request: Request) -> Response:
        return FileResponse(STATIC / "task.html", headers={"Cache-Control": "no-cache"})

    async def task_record(request: Request) -> Response:
        """One task's record from the app's state store (docs/results.md), read off the event loop."""
        task_id = request.path_params["task_id"]
        results = app.results
        if results is None:
            return JSONResponse({"error": "this app has no state store: build it with App(results=...) "
                                          "(docs/results.md)"}, status_code=404)
        try:
            record = await asyncio.to_thread(lambda: results.store().read(task_id) or pending(task_id))
        except TaskqError as exc:  # StateStoreError: unreachable, damaged
            return JSONResponse({"error": str(exc)}, status_code=503)
        # The task's own values may be anything msgpack carries: repr what JSON can't.
        return Response(json.dumps(as_json(record), default=repr), media_type="application/json",
                        headers={"Cache-Control": "no-cache"})

    async def replay(request: Request) -> Response:
        return await act(request, "replay")

    async def purge(request: Request) -> Response:
        return await act(request, "purge")

    routes = [
        Route("/", index),
        Route("/events", events),
        Route("/api/state", state),
        Route("/task/{task_id}", task_page),
        Route("/api/task/{task_id}", task_record),
        Route("/api/replay", replay, methods=["POST"]),
        Route("/api/purge", purge, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    web = Starlette(routes=routes, lifespan=lifespan, middleware=guard.middleware(allowed_hosts=allowed_hosts, token=token))
    web.state.hub = hub
    return web


def serve(app: App, queue_names: list[str], sock: socket.socket, *, allowed_hosts: list[str],
          token: str | None = None) -> None:
    """Serve the dashboard on ``sock`` until SIGINT or SIGTERM."""
    web = create_app(app, queue_names, allowed_hosts=allowed_hosts, token=token)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Ctrl-C or SIGTERM is how this command ends, so exit 0 afterwards (uvicorn's own
            # handler re-raises the signal at the end); a second Ctrl-C stops at once.
            web.state.hub.close_soon()  # or the open event streams hold the shutdown up
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    config = uvicorn.Config(web, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    Server(config).run(sockets=[sock])
