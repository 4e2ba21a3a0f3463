"""Who may talk to the dashboard: its own page and the operator's scripts, never another site.

The page can replay and purge queues, so it must refuse what a browser does on behalf of
another site. Two attacks, two checks:

* **DNS rebinding**: evil.example resolves to 127.0.0.1, and its scripts then read and
  post to us as "same-origin" — but their requests name evil.example in ``Host``. So a
  ``Host`` that is not an address we serve (or a name the operator allowed) is refused,
  on every route (Starlette's ``TrustedHostMiddleware``).
* **Cross-site requests (CSRF)**: another page POSTs to us. Browsers send ``Origin`` with
  every POST, so a POST whose ``Origin`` isn't ours is refused. A POST without ``Origin``
  comes from a script or an old browser; it must carry ``X-Taskq-Dashboard`` (a header a
  cross-site request can't set without a CORS preflight, which we never answer) or the
  token in ``Authorization``.

The optional token (``--token``, ``TASKQ_DASHBOARD_TOKEN``, taskq/cli/dashboard.py) is what makes listening beyond
localhost acceptable: every request must then carry it, as ``Authorization: Bearer``, as
the cookie the page gets, or once as ``?token=`` (answered with that cookie, ``HttpOnly``
and ``SameSite=Strict``, and a redirect that takes the token out of the address bar).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_COOKIE = "taskq_dashboard_token"
MARKER_HEADER = "x-taskq-dashboard"  # sent by the page's script; scripts of the operator's send it too
SAFE_METHODS = ("GET", "HEAD")


def error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class CrossSiteGuard:
    """ASGI middleware: the token (when set), then the Origin check for anything but GET/HEAD."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.check_token(scope, headers) if self.token else None
        if refusal is None and scope["method"] not in SAFE_METHODS:
            refusal = self.check_origin(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def check_token(self, scope: Scope, headers: Headers) -> Response | None:
        if self._matches(bearer(headers)) or self._matches(cookie(headers)):
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for key, value in query if key == "token"]
        if given and self._matches(given[-1]) and scope["method"] in SAFE_METHODS:
            rest = urlencode([(key, value) for key, value in query if key != "token"])
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            # given[-1] is the token itself: _matches just compared them.
            response.set_cookie(TOKEN_COOKIE, given[-1], httponly=True, samesite="strict", path="/")
            return response
        return error(401, "this dashboard needs its token: open it once as /?token=TOKEN, "
                          "or send Authorization: Bearer TOKEN")

    def check_origin(self, scope: Scope, headers: Headers) -> Response | None:
        origin = headers.get("origin")
        if origin is None:
            if MARKER_HEADER in headers or (self.token and self._matches(bearer(headers))):
                return None
            return error(403, f"refused: a POST without Origin needs the {MARKER_HEADER} header")
        ours = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        if origin.lower() != ours.lower():
            return error(403, f"refused: Origin {origin} is not this dashboard ({ours})")
        return None

    def _matches(self, given: str | None) -> bool:
        return given is not None and self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())


def bearer(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def cookie(headers: Headers) -> str | None:
    return cookie_parser(headers.get("cookie", "")).get(TOKEN_COOKIE)


def middleware(*, allowed_hosts: list[str], token: str | None) -> list[Middleware]:
    """Both checks, the Host check first: a rebinding page learns nothing, not even a 401."""
    return [
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts, www_redirect=False),
        Middleware(CrossSiteGuard, token=token),
    ]
