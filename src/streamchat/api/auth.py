"""API keys: Bearer auth on every model route, compared in constant time.

With no key configured every route is open, as in the seed. With keys, a request must send
`Authorization: Bearer KEY`. The browser's `EventSource` cannot set headers, so the GET routes
that it opens (`/stream`, `/v1/streams/{id}`) also take `?api_key=`. Every configured key is
compared with `hmac.compare_digest`, with no early exit, so timing tells nothing about which
prefix matched.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from streamchat.api.errors import APIError
from streamchat.api.state import CALLER_KEY, ServerState, get_state, key_digest

_QUERY_KEY_PATHS = ("/stream", "/v1/streams/")


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.method == "GET" and request.url.path.startswith(_QUERY_KEY_PATHS):
        return request.query_params.get("api_key") or None
    return None


def matches(candidate: str, keys: frozenset[str]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def authenticate(request: Request, state: ServerState) -> str | None:
    """The caller's key (None when the server has no keys); 401 when a key is needed and wrong."""
    if not state.api_keys:
        return None
    key = presented_key(request)
    if key is None:
        raise APIError(
            401,
            "an API key is required: send 'Authorization: Bearer YOUR_KEY'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not matches(key, state.api_keys):
        raise APIError(
            401, "Incorrect API key provided.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


async def require_key(request: Request, state: Annotated[ServerState, Depends(get_state)]) -> str | None:
    """Route dependency for model routes: authenticates, then applies the key's rate limit."""
    key = authenticate(request, state)
    state.limiter.admit_request(key_digest(key))
    CALLER_KEY.set(key)
    return key


async def health_access(request: Request, state: Annotated[ServerState, Depends(get_state)]) -> None:
    if not state.settings.public_health:
        authenticate(request, state)


async def metrics_access(request: Request, state: Annotated[ServerState, Depends(get_state)]) -> None:
    if not state.settings.public_metrics:
        authenticate(request, state)
