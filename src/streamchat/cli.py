"""`streamchat serve` runs the server; `streamchat chat` is a terminal client for it.

Every `serve` flag is generated from `Settings`, so a flag, its `STREAMCHAT_*` environment
variable and its validation never drift apart.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import get_args

from pydantic import ValidationError

from streamchat.config import Settings
from streamchat.engine.remote_code.shipped import refusal


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (OpenAI, seed /stream, ChatGLM api.py)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "STREAMCHAT_" + name.upper()
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description or ''} (env {env}; default {default})".strip()
        choices = get_args(field.annotation) if "Literal" in str(field.annotation) else None
        # a switch given alone means true: `--trust-remote-code` as well as `--trust-remote-code true`
        switch = {"nargs": "?", "const": "true"} if field.annotation is bool else {}
        p.add_argument(flag, dest=name, default=None, help=help_text, choices=choices or None, **switch)


def _chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in the terminal with a running server, streaming")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--api-key", default=None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamchat")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _chat_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "chat":
        from streamchat.client import run_chat

        return run_chat(args.url, args.system, args.max_tokens, args.temperature, args.api_key)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"streamchat: invalid setting {key}={err.get('input')!r}: {err['msg']}", file=sys.stderr)
        return 2
    refused = refusal(settings.model, settings.trust_remote_code)
    if refused is not None:  # before the server starts: nothing it would load runs
        print(f"streamchat: {refused}", file=sys.stderr)
        return 2
    if settings.models_file is not None:
        from streamchat.models_file import ModelsFileError, read_models_file

        try:
            entries = read_models_file(settings.models_file, settings)
        except ModelsFileError as exc:
            print(f"streamchat: {exc}", file=sys.stderr)
            return 2
        for entry in entries:
            refused = refusal(entry.settings.model, entry.settings.trust_remote_code)
            if refused is not None:
                print(f"streamchat: [models.{entry.name}]: {refused}", file=sys.stderr)
                return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from streamchat.replicas.options import uses_replicas

    if uses_replicas(settings):
        from streamchat.replicas.launch import serve_replicas

        return serve_replicas(settings)
    from streamchat.server import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
