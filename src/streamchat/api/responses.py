"""OpenAI's Responses API: `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`, `POST …/cancel`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from streamchat.api.auth import require_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
