"""Slow readers: many clients that each read a stream a byte a second. Does the server's memory stay bounded?

Each client is a raw socket with a small receive buffer (SO_RCVBUF) so the kernel cannot soak up
the stream for it; it sends one streaming chat request and then reads one byte a second. The
server keeps generating while its writes back up: what it holds per stream is the stream log's
events plus the transport's buffer, which pauses the writer (uvicorn's flow control) when full.
The server's RSS is sampled before, during and after.

    .venv/bin/python -m bench.slow_readers                     # 200 clients, 60 s
    .venv/bin/python -m bench.slow_readers --clients 50 --duration 20
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

from bench.stress import RssSampler, log, machine_line, serve

PROMPT = "Write a very long story about a lighthouse keeper and the sea."


def _request(port: int, max_tokens: int) -> bytes:
    body = json.dumps({
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "resumable": False,
    })  # fmt: skip
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body.encode()


def reader(port: int, args: argparse.Namespace, stop: threading.Event, got: list[int], i: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)  # before connect: fixes the window
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_request(port, args.max_tokens))
        while not stop.is_set():
            if sock.recv(1):
                got[i] += 1
            stop.wait(1.0 / args.rate)
    except OSError:
        got[i] = -1
    finally:
        sock.close()


def run(args: argparse.Namespace) -> dict:
    flags = ["--max-num-seqs", str(args.max_num_seqs), "--max-queue", str(args.clients), "--log-level", "warning"]
    with serve("slow_readers", *flags) as server:
        port = int(server.url.rsplit(":", 1)[1])
        time.sleep(2)
        before = server.rss_mb()
        stop = threading.Event()
        got = [0] * args.clients
        threads = [threading.Thread(target=reader, args=(port, args, stop, got, i)) for i in range(args.clients)]
        log(f"{args.clients} slow readers for {args.duration:.0f} s; RSS before {before:.0f} MB")
        with RssSampler(server) as during:
            for t in threads:
                t.start()
            time.sleep(args.duration)
            mid = server.health()
            stop.set()
            for t in threads:
                t.join(timeout=15)
        settled = server.wait_idle(timeout=120)
        time.sleep(2)
        after = server.rss_mb()
        health = server.health()
    return {
        "clients": args.clients,
        "duration_s": args.duration,
        "rcvbuf": args.rcvbuf,
        "max_tokens": args.max_tokens,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(during.peak, 1),
        "rss_after_mb": round(after, 1),
        "rss_series_mb": [round(x) for x in during.samples[:: max(1, len(during.samples) // 12)]],
        "running_during": mid["running"],
        "waiting_during": mid["waiting"],
        "generated_while_reading": mid["finished"],
        "bytes_read_per_client": sorted(set(got)),
        "idle_after": settled,
        "running_after": health["running"],
        "streams_after": health["streams"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--duration", type=float, default=60.0, help="seconds the clients read")
    p.add_argument("--rate", type=float, default=1.0, help="bytes per second each client reads")
    p.add_argument("--rcvbuf", type=int, default=1024, help="SO_RCVBUF of each client socket")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-num-seqs", type=int, default=64)
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps({"machine": machine_line(), **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
