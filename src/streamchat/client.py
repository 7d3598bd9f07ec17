"""A terminal chat client that streams answers from a running streamchat server."""

from __future__ import annotations

import json
import sys

import httpx


def stream_chat(client: httpx.Client, url: str, body: dict, headers: dict[str, str]):
    """Yield content pieces of one streamed chat completion."""
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            resp.read()
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text
            raise RuntimeError(f"HTTP {resp.status_code}: {message}")
        event = "message"
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                obj = json.loads(data)
                if event == "error":
                    raise RuntimeError(obj["error"]["message"])
                for choice in obj.get("choices", []):
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        yield piece
            elif not line:
                event = "message"


def run_chat(url: str, system: str | None, max_tokens: int, temperature: float, api_key: str | None) -> int:
    url = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    print("streamchat chat — /reset clears the conversation, /exit or Ctrl-D leaves.", file=sys.stderr)
    with httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client:
        while True:
            try:
                text = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return 0
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                messages = messages[:1] if system else []
                continue
            if not text:
                continue
            messages.append({"role": "user", "content": text})
            body = {"messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": temperature}
            answer = []
            print("assistant> ", end="", flush=True)
            try:
                for piece in stream_chat(client, url, body, headers):
                    answer.append(piece)
                    print(piece, end="", flush=True)
            except KeyboardInterrupt:
                print(" [stopped]", end="")
            except (httpx.HTTPError, RuntimeError) as exc:
                print(f"\n[error: {exc}]", file=sys.stderr)
                messages.pop()
                continue
            print()
            messages.append({"role": "assistant", "content": "".join(answer)})
