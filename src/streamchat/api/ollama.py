"""Ollama's API: `/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/version`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from streamchat.api.auth import require_key

router = APIRouter(prefix="/api", dependencies=[Depends(require_key)])
