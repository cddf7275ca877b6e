"""Who may call the server: the API key (`require_key`, the one dependency of every
protected route) and, for a keyless server, the Host check (`HostCheck`).

A keyless server answers only to Host names it is bound to (`host_allowed`): a DNS-rebinding
page reaches a local server under the attacker's own domain name, so the check is on names.
With a key, a rebinding page has nothing to send, and the Host check is off."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from opens1.serve.protocol import APIError
from opens1.serve.state import ServerState

LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def get_state(request: Request) -> ServerState:
    """The server's state, as a FastAPI dependency."""
    return request.app.state.s1


def check_auth(state: ServerState, request: Request) -> None:
    """A 401 unless the request carries `Authorization: Bearer <the key>` (when one is set)."""
    if not state.api_key:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", type="authentication_error",
                       code="invalid_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
        raise APIError(401, "invalid API key", type="authentication_error", code="invalid_api_key")


async def require_key(request: Request) -> None:
    """The FastAPI dependency every route but /health and the page's files sits behind."""
    check_auth(get_state(request), request)


def host_allowed(host: str, bind: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a keyless server answers a request whose Host header names `host`: loopback
    names and addresses, the address the server is bound to (any address of this machine
    when bound to 0.0.0.0 or ::), and `allowed` (exact names, `*.suffix` patterns, or `*`
    for any)."""
    name = _host_name(host)
    if not name:
        return True  # no Host header (HTTP/1.0): not a browser
    if "*" in allowed or name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        return True
    bind_name = _host_name(bind)
    if name == bind_name or (ip is not None and bind_name in ("0.0.0.0", "::", "")):
        return True
    return any(name == a.lower() or (a.startswith("*.") and name.endswith(a[1:].lower())) for a in allowed)


def _host_name(host: str) -> str:
    """'Example.COM:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class HostCheck:
    """ASGI middleware: a 400 for a Host the server does not answer to (`host_allowed`)."""

    def __init__(self, app, bind: str, allowed: tuple[str, ...]):
        self.app, self.bind, self.allowed = app, bind, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not host_allowed(host, self.bind, self.allowed):
                err = APIError(400, f"this server does not answer to the host {host!r}; start it with "
                               "--allowed-hosts to add names (or --api-key)", code="invalid_host")
                await err.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
