"""Anthropic's Messages API: `POST /v1/messages`, `POST /v1/messages/count_tokens`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from streamchat.api.auth import require_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
