"""Hold N idle Matrix /sync long-polls open and count how they end.

Part of the benchmark (scripts/bench.sh); runs inside a benchmark container
with nothing but the Python standard library. It logs in (or reuses a cached
access token), takes the current ``next_batch`` with one quick sync, then opens
``--count`` connections that each send ``GET /sync?since=<next_batch>&timeout=<ms + i>``
with a filter that leaves out presence and account data, so that the
homeserver has no reason to answer before the timeout. Connections are opened
``--ramp`` at a time. It prints one JSON object: how many completed with 200
after the full timeout (held), early 200s, other statuses, errors by kind, the
peak number open at once and how long opening them took. A run passes when all
were open at once and all were answered 200 with no error or reset.

With ``--tokens K`` the long-polls use K access tokens (K logins of the same
user, one device each) in turn, so that a proxy hashing the access token spreads
them over several sync workers; ``--count-ports`` samples, once a second, the
established connections whose local port is one of those given (the sync
workers' listeners, in the same container) and reports each port's peak.

Load goes only to the URL given (the container's own loopback in the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

FILTER = {
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {"rooms": [], "account_data": {"not_types": ["*"]}},
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--base", required=True, help="client API base URL, e.g. https://matrix.bench.test")
    parser.add_argument("--cafile", default=None, help="CA bundle for https (default: the system store)")
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench-password")
    parser.add_argument(
        "--token-file", default="/var/tmp/mxedge-bench-token", help="access token cache (logins are rate limited)"
    )
    parser.add_argument("--count", type=int, default=1000, help="long-polls to hold at once")
    parser.add_argument("--timeout-ms", type=int, default=60000, help="the sync timeout parameter")
    parser.add_argument("--ramp", type=int, default=200, help="connections being opened at once")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds past the timeout before giving up on one")
    parser.add_argument("--tokens", type=int, default=1, help="access tokens (devices) the long-polls take in turn")
    parser.add_argument(
        "--count-ports", default="", help="comma-separated local ports whose established connections are sampled"
    )
    parser.add_argument("--print-tokens", action="store_true", help="print the access tokens as JSON and stop")
    return parser.parse_args(argv)


def ssl_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def http_json(url: str, ctx: ssl.SSLContext, data: dict | None = None, token: str | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, context=ctx if url.startswith("https") else None, timeout=30) as resp:
        return json.loads(resp.read())


def login(args: argparse.Namespace, ctx: ssl.SSLContext) -> str:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": args.user},
        "password": args.password,
    }
    return http_json(args.base.rstrip("/") + "/_matrix/client/v3/login", ctx, data=body)["access_token"]


def access_tokens(args: argparse.Namespace, ctx: ssl.SSLContext) -> list[str]:
    """``--tokens`` valid access tokens: the cached ones that still work, new logins for the rest."""
    base = args.base.rstrip("/")
    tokens: list[str] = []
    try:
        with open(args.token_file, encoding="ascii") as handle:
            cached = handle.read().split()
    except OSError:
        cached = []
    for token in cached[: args.tokens]:
        try:
            http_json(base + "/_matrix/client/v3/account/whoami", ctx, token=token)
            tokens.append(token)
        except (ValueError, urllib.error.URLError):
            pass
    while len(tokens) < args.tokens:
        tokens.append(login(args, ctx))
    fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("\n".join(tokens + cached[len(tokens):]) + "\n")
    return tokens


def established_by_port(ports: set[int]) -> dict[int, int]:
    """Established TCP connections by local port, for the ports given (/proc/net/tcp and tcp6)."""
    counts = dict.fromkeys(ports, 0)
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii") as handle:
                next(handle)
                for line in handle:
                    fields = line.split(None, 4)
                    if fields[3] != "01":  # ESTABLISHED
                        continue
                    port = int(fields[1].rsplit(":", 1)[1], 16)
                    if port in counts:
                        counts[port] += 1
        except OSError:
            pass
    return counts


async def sample_ports(ports: set[int], peaks: dict[int, int], total_peak: list[int]) -> None:
    while True:
        counts = await asyncio.get_running_loop().run_in_executor(None, established_by_port, ports)
        for port, count in counts.items():
            peaks[port] = max(peaks.get(port, 0), count)
        total_peak[0] = max(total_peak[0], sum(counts.values()))
        await asyncio.sleep(1)


class Stats:
    """Counters shared by the long-poll tasks."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.held = 0
        self.early = 0
        self.elapsed: list[float] = []


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before the status line")
    status = int(status_line.split()[1])
    length = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _sep, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if length is not None:
        return status, await reader.readexactly(length)
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return status, body
            body += await reader.readexactly(size)
            await reader.readline()
    return status, await reader.read()


async def one_poll(
    args: argparse.Namespace,
    target: urllib.parse.SplitResult,
    ctx: ssl.SSLContext | None,
    path: str,
    token: str,
    gate: asyncio.Semaphore,
    stats: Stats,
) -> None:
    host = target.hostname or "127.0.0.1"
    port = target.port or (443 if target.scheme == "https" else 80)
    writer = None
    counted = False
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None), 60
            )
            # Before the write: the server cannot start its timer any earlier.
            sent = time.monotonic()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {target.netloc}\r\nUser-Agent: mxedge-bench-longpoll\r\n"
                f"Authorization: Bearer {token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        stats.open += 1
        counted = True
        stats.peak = max(stats.peak, stats.open)
        status, body = await asyncio.wait_for(read_response(reader), args.timeout_ms / 1000 + args.grace)
        elapsed = time.monotonic() - sent
        stats.statuses[str(status)] = stats.statuses.get(str(status), 0) + 1
        if status == 200 and b"next_batch" in body:
            stats.elapsed.append(elapsed)
            if elapsed >= args.timeout_ms / 1000 * 0.95:
                stats.held += 1
            else:
                stats.early += 1
    except Exception as exc:  # noqa: BLE001 - every failure kind is counted, none is fatal
        kind = type(exc).__name__
        stats.errors[kind] = stats.errors.get(kind, 0) + 1
    finally:
        if counted:
            stats.open -= 1
        if writer is not None:
            writer.close()


async def run(args: argparse.Namespace) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    target = urllib.parse.urlsplit(args.base)
    ctx = ssl_context(args.cafile)
    tokens = access_tokens(args, ctx)
    query = {"filter": json.dumps(FILTER, separators=(",", ":")), "timeout": "0", "set_presence": "offline"}
    # One next_batch per token: each device's own stream position.
    since = {}
    for token in tokens:
        first = http_json(
            args.base.rstrip("/") + "/_matrix/client/v3/sync?" + urllib.parse.urlencode(query), ctx, token=token
        )
        since[token] = first["next_batch"]
    # Synapse answers identical sync requests from one response cache: the later
    # ones would return with the first. A timeout of its own (+i ms) per
    # connection makes every request distinct, so each one waits its full time.
    polls = []
    for i in range(args.count):
        token = tokens[i % len(tokens)]
        query.update(since=since[token], timeout=str(args.timeout_ms + i))
        polls.append(("/_matrix/client/v3/sync?" + urllib.parse.urlencode(query), token))
    ports = {int(p) for p in args.count_ports.split(",") if p}
    peaks: dict[int, int] = {}
    total_peak = [0]
    sampler = asyncio.ensure_future(sample_ports(ports, peaks, total_peak)) if ports else None
    stats = Stats()
    gate = asyncio.Semaphore(args.ramp)
    started = time.monotonic()
    tasks = [
        asyncio.ensure_future(one_poll(args, target, ctx if target.scheme == "https" else None, path, token, gate, stats))
        for path, token in polls
    ]
    # Opening is done once every task is past the gate (sent or failed).
    ramp_seconds = None
    while ramp_seconds is None:
        await asyncio.sleep(0.2)
        failed = sum(stats.errors.values())
        if stats.open + failed + len(stats.elapsed) >= args.count or all(t.done() for t in tasks):
            ramp_seconds = round(time.monotonic() - started, 1)
    await asyncio.gather(*tasks)
    sampler_error = None
    if sampler is not None:
        if sampler.done() and sampler.exception() is not None:
            sampler_error = repr(sampler.exception())
        sampler.cancel()
    elapsed = sorted(stats.elapsed)
    return {
        "base": args.base,
        "count": args.count,
        "tokens": len(tokens),
        # Peak established connections on each --count-ports port (the sync workers' side), and their sum.
        "port_peaks": {str(port): peaks.get(port, 0) for port in sorted(ports)},
        "ports_peak_total": total_peak[0],
        "port_sampler_error": sampler_error,
        "timeout_ms": args.timeout_ms,
        "nofile": [soft, hard],
        "held": stats.held,
        "early_200": stats.early,
        "statuses": stats.statuses,
        "errors": stats.errors,
        "peak_open": stats.peak,
        "ramp_s": ramp_seconds,
        "total_s": round(time.monotonic() - started, 1),
        "elapsed_min_s": round(elapsed[0], 1) if elapsed else None,
        "elapsed_max_s": round(elapsed[-1], 1) if elapsed else None,
        # Passed: every one open at the same time and answered 200, no error or
        # reset. An early 200 is the homeserver waking a sync, not a failure of
        # the connection; it is counted apart from the held ones.
        "ok": stats.held + stats.early == args.count and stats.peak == args.count and not stats.errors,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.print_tokens:
        print(json.dumps(access_tokens(args, ssl_context(args.cafile))))
        return 0
    result = asyncio.run(run(args))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
