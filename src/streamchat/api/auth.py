"""API keys: Bearer auth on every model route, compared in constant time.

With no key configured every route is open, as in the seed. With keys, a request must send
`Authorization: Bearer KEY`, or `x-api-key: KEY` as Anthropic's clients do. The browser's
`EventSource` cannot set headers, so the GET routes that it opens (`/stream`, `/v1/streams/{id}`)
also take `?api_key=`. Every configured key is compared with `hmac.compare_digest`, with no early
exit, so timing tells nothing about which prefix matched.

The caller's identity is the key's digest (`Owner`): requests and streams are counted and owned
by it, and the key itself is never kept in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from streamchat.api.errors import APIError
from streamchat.api.state import ServerState, State

_QUERY_KEY_PATHS = ("/stream", "/v1/streams/")


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.headers.get("x-api-key", "").strip():
        return request.headers["x-api-key"].strip()
    if request.method == "GET" and request.url.path.startswith(_QUERY_KEY_PATHS):
        return request.query_params.get("api_key") or None
    return None


def matches(candidate: str, keys: frozenset[str]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def authenticate(request: Request, state: ServerState, throttled: bool = False) -> str | None:
    """The caller's key (None when the server has no keys); 401 when a key is needed and wrong.

    With `throttled` (model routes), an address that sent too many wrong keys gets 429 first.
    `/health` and `/metrics` are never throttled: a probe must not be locked out by others' guesses.
    """
    if not state.api_keys:
        return None
    throttle = state.auth_throttle if throttled else None
    address = request.client.host if request.client else ""
    if throttle is not None:
        throttle.check(address)
    key = presented_key(request)
    if key is None:
        raise APIError(
            401,
            "an API key is required: send 'Authorization: Bearer YOUR_KEY'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not matches(key, state.api_keys):
        if throttle is not None:
            throttle.failed(address)
        raise APIError(
            401, "Incorrect API key provided.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


def key_digest(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key is not None else None


async def require_key(request: Request, state: State) -> str | None:
    """Dependency of every model route: authenticates, applies the key's rate limit, and yields the
    caller's identity (None on an open server). FastAPI runs it once per request however often
    it is named."""
    owner = key_digest(authenticate(request, state, throttled=True))
    state.admission.admit_rate(owner)
    return owner


Owner = Annotated[str | None, Depends(require_key)]


async def health_access(request: Request, state: State) -> None:
    if not state.settings.public_health:
        authenticate(request, state)


async def metrics_access(request: Request, state: State) -> None:
    if not state.settings.public_metrics:
        authenticate(request, state)
