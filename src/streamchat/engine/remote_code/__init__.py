"""Models whose Python code ships beside their weights (`auto_map` in config.json), as ChatGLM's does.

- `shipped.py`: whether a folder ships code, and the refusal to run it without `--trust-remote-code`;
- `loader.py`: loading such a model, and choosing how to serve it: a model whose `forward` takes
  transformers' `Cache` goes to the batching engine; one that only offers `stream_chat`/`chat`
  (ChatGLM-6B/2/3) is served by `StreamChatEngine` (`engine.py`), one answer at a time;
- `compat.py`: what old remote code meets under transformers 5, fixed where that is safe and
  otherwise named with its fix;
- `conversation.py`, `prompts.py`, `responses.py`, `chat_call.py`: chat messages as ChatGLM's
  query and history, the prompt token counts the HTTP layer checks, growing responses as
  UTF-8-safe deltas, and the call itself with the request's settings.
"""
