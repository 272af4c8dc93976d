# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The stand-in upstream of the end-to-end tests (molecule/shared/files/standin.py), on loopback.

What the stand-in records is what the proxy tests will assert on, so it must
record the request target exactly as it arrived and keep a WebSocket open both ways.
"""

import asyncio
import importlib.util
import json
import pathlib

import aiohttp
import pytest
from aiohttp import web

STANDIN = pathlib.Path(__file__).resolve().parents[2] / "molecule" / "shared" / "files" / "standin.py"


@pytest.fixture(scope="module")
def standin():
    spec = importlib.util.spec_from_file_location("mxedge_standin", STANDIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _serve_and(standin, record, exchange):
    runner = web.AppRunner(standin.make_app("mas", str(record)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access
    try:
        async with aiohttp.ClientSession() as session:
            return await exchange(session, "http://127.0.0.1:%d" % port)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "method,target,body",
    [
        ("POST", "/_matrix/client/v3/login", b'{"type":"m.login.password"}'),
        ("GET", "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example%2F", b""),
        ("GET", "/a%2Fb//c?x=%41", b""),
        ("PUT", "/sfu/get", b"x" * 70000),
    ],
)
def test_records_the_request_as_received(standin, tmp_path, method, target, body):
    record = tmp_path / "record.jsonl"

    async def exchange(session, base):
        url = aiohttp.client.URL(base + target, encoded=True)
        async with session.request(method, url, data=body or None, headers={"X-Probe": "1"}) as response:
            return response.status, await response.json()

    status, answer = asyncio.run(_serve_and(standin, record, exchange))
    assert status == 200 and answer == {"standin": "mas", "method": method, "target": target}
    (entry,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert (entry["name"], entry["method"], entry["target"], entry["body_size"], entry["websocket"]) == (
        "mas", method, target, len(body), False)
    assert ["X-Probe", "1"] in entry["headers"]


def test_websocket_carries_messages_both_ways(standin, tmp_path):
    record = tmp_path / "record.jsonl"

    async def exchange(session, base):
        async with session.ws_connect(base + "/rtc?access_token=t") as socket:
            received = [(await socket.receive()).data]
            for text in ("one", "two"):
                await socket.send_str(text)
                received.append((await socket.receive()).data)
            await socket.close()
            return received

    received = asyncio.run(_serve_and(standin, record, exchange))
    assert received == ["hello mas", "mas: one", "mas: two"]
    (entry,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert entry["websocket"] is True and entry["target"] == "/rtc?access_token=t" and entry["method"] == "GET"
