"""uvicorn's HTTP protocol, answering requests it cannot parse in our error shape.

A request that the HTTP parser rejects never reaches the app: uvicorn answers it with a plain-text
`400 Invalid HTTP request received.`. A client that sent an over-long URL (a long prompt in
`GET /stream?prompt=`, past the parser's 64 KiB) should hear 414, and every client should get the
OpenAI error object it parses everywhere else.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamchat.api.errors import error_body

MAX_URL_BYTES = 65535  # httptools' URL parser holds lengths in 16 bits


class ShapedErrorsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:  # noqa: ARG002  uvicorn's message is replaced by ours
        too_long = len(getattr(self, "url", b"")) > MAX_URL_BYTES
        status, reason = (414, b"URI Too Long") if too_long else (400, b"Bad Request")
        message = f"the URL is longer than {MAX_URL_BYTES} bytes" if too_long else "the HTTP request is malformed"
        body = json.dumps(error_body(status, message)).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
