#!/usr/bin/env python3
"""Opens N streaming requests to URL and holds them open after their first bytes.

Usage: hold_streams.py URL MODEL N KEY. Prints "open N" once every stream has answered
its headers and first event, then keeps them open until killed.
"""
import asyncio
import json
import signal
import sys
from urllib.parse import urlparse


async def one(host, port, path, body, key, ready):
    reader, writer = await asyncio.open_connection(host, port)
    req = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    writer.write(req)
    await writer.drain()
    got = b""
    while b"message_start" not in got and b"content_block" not in got:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"closed early: {got[:200]!r}")
        got += chunk
    ready.append(1)
    await asyncio.Event().wait()  # hold until cancelled


async def main():
    url, model, n, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    u = urlparse(url)
    body = json.dumps({"model": model, "max_tokens": 16, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    ready = []
    tasks = [asyncio.create_task(one(u.hostname, u.port, u.path, body, key, ready)) for _ in range(n)]
    while len(ready) < n:
        done = [t for t in tasks if t.done() and t.exception()]
        if done:
            print(f"failed: {done[0].exception()}", flush=True)
            return
        await asyncio.sleep(0.05)
    print(f"open {n}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


asyncio.run(main())
