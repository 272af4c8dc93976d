# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Probe the homeserver through a proxy until a stop file exists (molecule/workers upgrade).

Every 0.2 s: GET /_matrix/client/v3/sync?timeout=0 and /_matrix/client/versions
through the proxy at --proxy (TLS checked against the system store, SNI and
Host the homeserver's name). One JSON line per request: the path, the status,
the errcode of a JSON body, whether the body was JSON, or the connection error.
"""

import argparse
import http.client
import json
import os
import socket
import ssl
import time


class ProxyConnection(http.client.HTTPSConnection):
    """HTTPS to the proxy's address, with the homeserver's name for SNI, Host and the certificate check."""

    def __init__(self, name, address, **kwargs):
        super().__init__(name, 443, **kwargs)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, 443), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def probe(args, path):
    # A request the proxy holds while the homeserver restarts is not a dropped one: wait
    # as long as the proxy's own long-poll timeout could (docs/workers.md, upgrades).
    connection = ProxyConnection(args.name, args.proxy, timeout=300, context=ssl.create_default_context())
    started = time.time()
    record = {"at": started, "path": path.split("?")[0]}
    try:
        connection.request("GET", path, headers={"Authorization": "Bearer " + args.token})
        response = connection.getresponse()
        body = response.read()
        record["status"] = response.status
        try:
            document = json.loads(body)
            record["json"] = True
            record["errcode"] = document.get("errcode") if isinstance(document, dict) else None
        except ValueError:
            record["json"] = False
    except (OSError, http.client.HTTPException) as error:
        record["error"] = "%s: %s" % (type(error).__name__, error)
    finally:
        connection.close()
        record["seconds"] = round(time.time() - started, 3)
    return record


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "a", encoding="utf-8") as out:
        while not os.path.exists(args.stop):
            for path in ("/_matrix/client/v3/sync?timeout=0", "/_matrix/client/versions"):
                out.write(json.dumps(probe(args, path)) + "\n")
                out.flush()
            time.sleep(0.2)


if __name__ == "__main__":
    main()
