#!/usr/bin/env python3
"""A TCP proxy that adds latency to every request, for the latency benchmark (issue 12).

    latency_proxy.py --listen PORT --upstream HOST:PORT --latency-ms 30 [--stats FILE]

Each chunk the client sends (an HTTP/1.1 request: the worker never pipelines) is held
for --latency-ms before it goes upstream, so every request's first byte of answer comes
at least that much later, as from a cloud store tens of milliseconds away. Answers flow
back at once.

It also removes the stand-in's own stall. s3s-fs writes a response's head and body in
two writes without TCP_NODELAY, so Nagle holds the body until the head is acknowledged,
and a client in delayed-ACK mode acknowledges ~40 ms later: on kept-alive connections
many requests answer 40 ms late whatever the client does (TCP_NODELAY on the client's
side does not help; it is the server's writes that wait). Re-arming TCP_QUICKACK on the
upstream socket after every read makes this proxy acknowledge at once, so the worker
sees the server's real service time plus exactly the injected latency. Both sockets
also get TCP_NODELAY, so the proxy adds no Nagle stall of its own.

On SIGTERM it writes {"requests": N, "connections": M} to --stats and exits.
"""
import argparse
import asyncio
import json
import signal
import socket

STATS = {"requests": 0, "connections": 0}


async def pump(loop, src, dst, delay=0.0, requests=False, quickack=False):
    """src → dst until src ends, then half-close dst. `delay`: each chunk is held that
    long (client → upstream); `requests`: count chunks that start an HTTP request;
    `quickack`: acknowledge every read of src at once (upstream → client; Linux clears
    quick-ACK mode on its own, so it is re-armed after every read)."""
    while True:
        data = await loop.sock_recv(src, 262144)
        if quickack:
            src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if not data:
            break
        if requests and data[:4] in (b"GET ", b"HEAD", b"PUT ", b"POST", b"OPTI", b"DELE"):
            STATS["requests"] += 1
        if delay:
            await asyncio.sleep(delay)
        await loop.sock_sendall(dst, data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


async def serve(client, upstream_addr, delay):
    loop = asyncio.get_running_loop()
    STATS["connections"] += 1
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.setblocking(False)
    try:
        await loop.sock_connect(upstream, upstream_addr)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        await asyncio.gather(
            pump(loop, client, upstream, delay=delay, requests=True),
            pump(loop, upstream, client, quickack=True),
        )
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="HOST:PORT")
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--stats")
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    upstream_addr = (host, int(port))
    delay = a.latency_ms / 1000.0

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", a.listen))
    listener.listen(1024)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGINT, lambda: stop.done() or stop.set_result(None))

    async def accept():
        tasks = set()
        while True:
            client, _ = await loop.sock_accept(listener)
            client.setblocking(False)
            t = asyncio.create_task(serve(client, upstream_addr, delay))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    acceptor = asyncio.create_task(accept())
    await stop
    acceptor.cancel()
    if a.stats:
        with open(a.stats, "w") as f:
            json.dump(STATS, f)


if __name__ == "__main__":
    asyncio.run(main())
