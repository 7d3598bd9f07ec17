"""A TCP proxy in front of the server whose network can be cut and restored.

A fake for what the real parts cannot do on demand: drop every connection mid-answer the way a
flaky network does. `cut()` resets all proxied connections and stops listening, so new
connections are refused (as to a host that went away); `restore()` listens on the same port again.
The page is loaded through the proxy, so its requests stay same-origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class CuttableProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.port = 0
        self.connections = 0  # accepted and forwarded, over the proxy's life
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Reset every proxied connection, both sides, and refuse new ones until `restore()`."""
        assert self._server is not None, "proxy not listening"
        self.cuts += 1
        self._server.close()
        for down, up in list(self._pairs):
            down.transport.abort()
            up.transport.abort()
        self._server = None

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            down_w.transport.abort()
            return
        pair = (down_w, up_w)
        self._pairs.add(pair)
        self.connections += 1
        try:
            await asyncio.gather(self._pipe(down_r, up_w), self._pipe(up_r, down_w))
        finally:
            self._pairs.discard(pair)
            down_w.close()
            up_w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy one direction; when it ends, close the other side after what it holds is sent."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()  # HTTP/1.1 needs no half-close
