# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""A stand-in upstream that records what reaches it through a proxy.

For the components that have no package on the registries this project can
reach (Matrix Authentication Service, LiveKit's SFU and its JWT service): the
end-to-end tests run one of these where the real service would listen and
assert, per proxy flavour, which requests arrived and how. It is not the
service: it answers every request with a small JSON document naming itself,
and it does not implement any of their protocols.

Each request is appended to the record file as one JSON line: the stand-in's
name, method, the raw request target exactly as received (path and query,
nothing decoded), the request headers, the body size and whether it was a
WebSocket. A WebSocket request (``Upgrade: websocket``) is accepted; the
stand-in sends ``hello <name>`` first, then answers each text message ``m``
with ``<name>: m`` until the client closes.

Runs on Debian's python3-aiohttp (a maintained HTTP and WebSocket library):

    standin.py --name mas --listen 127.0.0.1:8080 --record /var/log/standin-mas.jsonl
"""

import argparse
import json
import time

from aiohttp import WSMsgType, web


def _entry(name, request, body_size, websocket):
    return {
        "name": name,
        "time": time.time(),
        "method": request.method,
        "target": request.raw_path,
        "version": "%d.%d" % (request.version.major, request.version.minor),
        "headers": [[key.decode("latin-1"), value.decode("latin-1")] for key, value in request.raw_headers],
        "body_size": body_size,
        "websocket": websocket,
        "remote": request.remote,
    }


def make_app(name, record):
    """The aiohttp application: one catch-all handler for every method and path."""

    def write(entry):
        with open(record, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry, sort_keys=True) + "\n")

    async def handle(request):
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and request.method == "GET":
            socket = web.WebSocketResponse(heartbeat=None)
            await socket.prepare(request)
            write(_entry(name, request, 0, True))
            await socket.send_str("hello %s" % name)
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    await socket.send_str("%s: %s" % (name, message.data))
                elif message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
            return socket
        body = await request.read()
        write(_entry(name, request, len(body), False))
        return web.json_response({"standin": name, "method": request.method, "target": request.raw_path})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--name", required=True, help="what the stand-in stands in for; in every answer and record")
    parser.add_argument("--listen", required=True, help="address:port to listen on (IPv6 in brackets)")
    parser.add_argument("--record", required=True, help="file the requests are appended to, one JSON line each")
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    web.run_app(make_app(args.name, args.record), host=host.strip("[]"), port=int(port), print=None,
                access_log=None)


if __name__ == "__main__":
    main()
