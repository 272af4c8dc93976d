# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The listeners of a Caddy configuration, read from what ``caddy adapt`` prints.

``caddy adapt --adapter caddyfile --config /etc/caddy/Caddyfile`` turns the
Caddyfile (and every file it imports) into Caddy's JSON, the configuration Caddy
would run. Its HTTP servers (``apps.http.servers``) each listen on one or more
addresses (``":443"``, ``"tcp4/0.0.0.0:443"``, ``"127.0.0.1:8000-8010"``) and hold
one top-level route per site block, whose ``host`` matchers are the site's host
names (a site without host names, ``:443``, has none and answers every name).

- ``listeners(adapted, own_paths, source)``: one entry per site and port,
  ``{"port": int, "names": [...], "default": bool, "where": "...", "bind": "..."}``
  (docs/alongside.md). ``names`` are the site's host names in lower case, ``"*"`` for a
  site that answers every name; ``default`` is true for such a catch-all (Caddy has no
  other default site: a name no site serves gets an empty answer). ``bind`` is the
  host part of the server's address for that port (``""`` for every address,
  ``"tcp4/0.0.0.0"``, ``"127.0.0.1"`` ...): the role's sites on that port bind the same,
  so that Caddy serves them from the same server (it cannot open a second listener on
  a port one of its servers holds). A server whose sites have host names and whose
  automatic HTTPS is on also answers those names on the HTTP port (``http_port``,
  80) with redirects, which Caddy adds when it loads the configuration
  (``caddy adapt`` does not show them): listed as well, their ``where`` says so
  (names of ``automatic_https.skip``, the ``http://`` sites, have none).
  Sites of the role's own are left out: the role marks each of its site blocks with
  ``vars mxedge_matrix <file>``, and a site whose marker names a path of ``own_paths``
  (a file, or a directory and everything under it) is the role's.

- ``canonical(config)``: the same configuration with the lists Caddy's adapter
  builds from Go maps (``UNORDERED``: a server's ``logs.skip_hosts``, a
  ``file_server``'s ``hide``) sorted, so that the configuration Caddy runs and
  the one the Caddyfile adapts to compare equal when nothing differs but
  that random order (the role reloads Caddy when they differ).

Pure Python, no Ansible: the role's filters and the unit tests call it.
"""

from __future__ import absolute_import, division, print_function

import json
import re

__metaclass__ = type  # pylint: disable=invalid-name

# The key of the `vars` handler by which the role marks its site blocks.
MARKER = "mxedge_matrix"
_DEFAULT_HTTP_PORT = 80
_MAX_RANGE = 1024
# Keys whose lists `caddy adapt` (Caddy 2.6) fills from Go maps, in random order on each run:
# a server's logs.skip_hosts (its sites without a log) and a file_server's hide (the config
# files it must not serve, one per imported file). Their order means nothing to Caddy.
UNORDERED = frozenset(("skip_hosts", "hide"))
_ADDRESS = re.compile(r"^(?:(?P<network>[a-z0-9]+)/)?(?P<host>\[[^\]]*\]|[^/\[\]]*?):(?P<low>\d+)(?:-(?P<high>\d+))?$")


class CaddyConfigError(ValueError):
    """The text is not the JSON ``caddy adapt`` prints; the message says what is wrong."""


def _config(adapted):
    if adapted is None or (isinstance(adapted, str) and not adapted.strip()):
        return {}
    if isinstance(adapted, str):
        try:
            adapted = json.loads(adapted)
        except ValueError as error:
            raise CaddyConfigError("the output of caddy adapt is not JSON: %s" % error) from None
    if not isinstance(adapted, dict):
        raise CaddyConfigError("the output of caddy adapt must be a JSON object, got %s" % type(adapted).__name__)
    return adapted


def _http(config):
    http = (config.get("apps") or {}).get("http") or {}
    if not isinstance(http, dict) or not isinstance(http.get("servers", {}), dict):
        raise CaddyConfigError("apps.http.servers of the caddy adapt output is not an object")
    return http


def _addresses(listen):
    """[(host with network, port, address)] of a server's listen addresses; UNIX sockets have no port."""
    found = []
    for address in listen or []:
        if not isinstance(address, str):
            raise CaddyConfigError("a listen address must be a string, got %r" % (address,))
        match = _ADDRESS.match(address)
        if not match or (match.group("network") or "").startswith("unix"):
            continue
        low = int(match.group("low"))
        high = int(match.group("high") or low)
        if high < low or high - low >= _MAX_RANGE:
            raise CaddyConfigError("listen address %r: a port range of at most %d ports, low to high" % (address, _MAX_RANGE))
        host = ("%s/" % match.group("network") if match.group("network") else "") + match.group("host")
        found.extend((host, port, address) for port in range(low, high + 1))
    return found


def _marked(handlers, own_paths):
    """Whether one of ``handlers`` is the role's ``vars`` marker naming a path of ``own_paths``."""
    for item in handlers or []:
        marked = item.get(MARKER) if isinstance(item, dict) and item.get("handler") == "vars" else None
        if isinstance(marked, str) and any(marked == own or marked.startswith(own.rstrip("/") + "/") for own in own_paths):
            return True
    return False


def _own(route, own_paths):
    """Whether a top-level route is a site block the role marked as written in one of own_paths."""
    for handler in route.get("handle") or []:
        inner_routes = (handler.get("routes") or []) if handler.get("handler") == "subroute" else []
        if any(_marked(inner.get("handle"), own_paths) for inner in inner_routes):
            return True
    return False


def _names(route):
    """The host names a top-level route answers; ["*"] when one of its matcher sets has no host matcher."""
    names = []
    for matcher_set in route.get("match") or [{}]:
        hosts = matcher_set.get("host") if isinstance(matcher_set, dict) else None
        if not hosts:
            return ["*"]
        names.extend(str(host).lower().rstrip(".") for host in hosts)
    return sorted(set(names))


def _sites(server, own_paths):
    """[names] of the operator's sites of a server, in its order.

    A server with one site and no host names (``:8448 {...}``) holds that site's routes
    at top level, unwrapped: every route without a host matcher is then the same
    catch-all, listed once, and the server is the role's when its marker is there.
    A server without routes answers every name.
    """
    routes = [route for route in server.get("routes") or [] if isinstance(route, dict)]
    if not routes:
        return [["*"]]
    if any(_marked(route.get("handle"), own_paths) for route in routes):
        return []
    sites = []
    for route in routes:
        names = None if _own(route, own_paths) else _names(route)
        if names and names not in sites:
            sites.append(names)
    return sites


def listeners(adapted, own_paths=(), source="the Caddyfile"):
    """The operator's listeners of the ``caddy adapt`` output ``adapted`` (text or parsed), as documented above."""
    own_paths = [str(path) for path in own_paths or []]
    http = _http(_config(adapted))
    http_port = int(http.get("http_port") or _DEFAULT_HTTP_PORT)
    found = []
    for name in sorted(http.get("servers") or {}):
        server = http["servers"][name]
        addresses = _addresses(server.get("listen"))
        sites = _sites(server, own_paths)
        for host, port, _address in addresses:
            for names in sites:
                found.append({"port": port, "names": names, "default": names == ["*"],
                              "where": "%s, server %s" % (source, name), "bind": host})
        auto = server.get("automatic_https") or {}
        if auto.get("disable") or auto.get("disable_redirects") or not addresses:
            continue
        if all(port == http_port for _host, port, _address in addresses):
            continue
        skipped = {str(host).lower() for host in auto.get("skip") or []}
        named = sorted({host for names in sites for host in names if host != "*" and host not in skipped})
        if named:
            found.append({"port": http_port, "names": named, "default": False,
                          "where": "%s, server %s (automatic HTTPS redirects)" % (source, name), "bind": ""})
    return found


def canonical(config):
    """``config`` (text or parsed, as ``caddy adapt`` prints it or ``/config/`` returns it) with the
    ``UNORDERED`` lists sorted; everything else as it is (routes, handlers and matchers keep their order)."""

    def walk(value, key=None):
        if isinstance(value, dict):
            return {name: walk(item, name) for name, item in value.items()}
        if isinstance(value, list):
            items = [walk(item) for item in value]
            if key in UNORDERED:
                return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
            return items
        return value

    return walk(_config(config))
