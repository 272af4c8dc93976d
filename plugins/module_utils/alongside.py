# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Conflicts between the route table's listeners and the operator's own sites (docs/alongside.md).

A proxy role in ``matrix_proxy_mode=alongside`` reads the proxy's live configuration
with the daemon's own tool and turns it into *operator listeners*, one per server
block, virtual host, site or frontend that is not the role's::

    {"port": 443, "names": ["example.test", "www.example.test"], "default": False,
     "where": "/etc/nginx/sites-enabled/example:3"}

``names`` are lower-case host names; ``"*"`` stands for a listener that answers every
name (no name, a catch-all). :func:`conflicts` compares them with the table and
returns one message per conflict, naming the variable that placed the Matrix
listener there, so that preflight stops before anything on the host changes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

# Which shared variable puts a vhost of the route table where it is.
_PLACED_BY = {
    "client": "matrix_homeserver_fqdn on matrix_client_port",
    "federation": "matrix_homeserver_fqdn (and the server name) on matrix_federation_port",
    "well_known": "the server name's host (matrix_server_name) on port 443, for /.well-known/matrix/*",
    "http": "matrix_tls_source=acme (plain HTTP on port 80 for every host name)",
    "mas": "matrix_mas_url",
    "rtc_jwt": "matrix_rtc_jwt_url",
    "rtc_sfu": "matrix_rtc_sfu_url",
}


class AlongsideError(Exception):
    """The listeners given are not in the documented shape."""


def _listener(item):
    if not isinstance(item, dict):
        raise AlongsideError("an operator listener must be a dict, got %r" % (item,))
    try:
        port = int(item["port"])
    except (KeyError, TypeError, ValueError):
        raise AlongsideError("operator listener %r has no integer port" % (item,)) from None
    names = item.get("names") or ["*"]
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise AlongsideError("operator listener %r: names must be a list of strings" % (item,))
    return {"port": port, "names": sorted({name.lower().rstrip(".") for name in names}),
            "default": bool(item.get("default", False)), "where": str(item.get("where", "?"))}


def _describe(listener):
    names = ", ".join(name if name != "*" else "every host name" for name in listener["names"])
    return "%s (%s on port %d)" % (listener["where"], names, listener["port"])


def conflicts(listeners, table, share_ports=True):
    """Return the messages for every conflict between ``listeners`` and the route ``table``.

    ``share_ports``: the daemon lets two of its sections listen on one port and picks
    by host name (nginx, Apache, Caddy); false for one that cannot (HAProxy's frontends),
    where any operator listener on a port of the table is a conflict.
    """
    listeners = [_listener(item) for item in listeners or []]
    messages = []
    by_port = {}
    for listener in listeners:
        by_port.setdefault(listener["port"], []).append(listener)
    for vhost in table["vhosts"]:
        placed = _PLACED_BY.get(vhost["name"], "the route table's %s listener" % vhost["name"])
        here = by_port.get(vhost["port"], [])
        hosts = sorted({host.lower() for host in vhost["hosts"]})
        if vhost.get("snippet"):
            owners = [listener for listener in here if any(host in listener["names"] for host in hosts)]
            if not owners:
                messages.append(
                    "matrix_well_known_site=operator: no site of the proxy's configuration answers %s on port %d, so "
                    "nothing would include the role's well-known snippet. Allowed: a site of the operator's for that "
                    "host on that port, or matrix_well_known_site=own (the role serves the documents itself)."
                    % (" or ".join(hosts), vhost["port"]))
            continue
        if not share_ports:
            messages.extend(
                "%s needs port %d, which %s already listens on, and this proxy cannot share a port between two of its "
                "sections: join the operator's section (see the flavour's docs) or choose another port."
                % (placed, vhost["port"], _describe(listener)) for listener in here)
            continue
        for listener in here:
            taken = sorted(set(hosts) & set(listener["names"]))
            if vhost["any_host"]:
                messages.append(
                    "%s answers every host name on port %d, and %s listens there too: allowed is a port no site of "
                    "the operator's uses." % (placed, vhost["port"], _describe(listener)))
            elif taken and vhost["name"] == "well_known":
                messages.append(
                    "%s: the operator's site %s already serves %s on port %d. Allowed: matrix_well_known_site=operator "
                    "(that site includes the role's snippet), or matrix_well_known_serve=false."
                    % (placed, listener["where"], ", ".join(taken), vhost["port"]))
            elif taken:
                messages.append(
                    "%s: %s on port %d is already a site of the operator's, %s. Allowed: a host name or port no site "
                    "of the operator's serves." % (placed, ", ".join(taken), vhost["port"], listener["where"]))
    return messages
