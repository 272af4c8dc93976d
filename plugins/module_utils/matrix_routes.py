# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The proxy contract as data: one ordered route table for every proxy flavour.

``route_table(spec)`` turns the shared ``matrix_*`` facts (computed once by the
``mxedge.matrix.matrix`` role) into the listeners ("vhosts"), their ordered
routes and the upstream pools every proxy role renders in its own syntax.
Nothing here knows a proxy's syntax; nothing in a proxy template knows a Matrix
path. Behaviour IDs (``MX01`` ...) are those of ``docs/contract.md``.

A route is::

    {"id": "client-api",                      # unique within its vhost
     "behaviours": ["MX01", "MX04"],          # contract IDs it implements
     "match": {"kind": "prefix" | "exact",
               "path": "/_matrix",            # on the proxy's normalised path
               "raw_regex": "^/_matrix(?:[/?]|$)",  # the raw request URI must match too (MX04)
               "methods": []},                # empty: any method
     "action": "forward" | "static" | "refuse",
     # forward:
     "upstream": "homeserver",
     "allow_sources": [],                     # non-empty: only these CIDRs, others refused (MX06)
     "refuse": {...error...},                 # the answer to a refused source
     # static:
     "body": "...", "content_type": "application/json", "cors": True,
     # refuse:
     "status": 403, "errcode": "M_FORBIDDEN", "error": "...", "body": "{...}",
     "policy": {"body_limit": 52428800, "timeout": "default" | "long_poll" | "tunnel",
                "sticky": None | "user" | "room" | "source"}}

Routes are ordered: the first route whose match holds answers. Prefix routes
match the path itself and anything below it (``/_matrix`` and ``/_matrix/...``),
never ``/_matrixfoo``.
"""

import json
import re

# Behaviour IDs of docs/contract.md, with their one-line titles. A runnable
# flavour's rendered configuration must cite each ID it implements.
BEHAVIOURS = {
    "MX01": "client vhost: client API prefixes to the homeserver",
    "MX02": "federation listener: /_matrix only",
    "MX03": "well-known documents answered by the proxy",
    "MX04": "request URI forwarded as received; raw URI under the route's prefix",
    "MX05": "forwarded headers overwritten, never appended",
    "MX06": "admin API refused unless the source is allow-listed",
    "MX07": "health endpoint forwarded and used for health checks",
    "MX08": "body limit, upstream keep-alive, long-poll timeouts",
    "MX09": "TLS profile, HTTP/2, IPv4 and IPv6 listeners",
    "MX10": "the daemon's own checker before anything goes live",
    "MX11": "errors the proxy produces are Matrix JSON with CORS",
    "MX12": "plain HTTP: ACME challenge forwarded, the rest redirected",
    "MX13": "delegated auth: login, logout and refresh and the auth service's host to MAS",
    "MX14": "MatrixRTC: the JWT service and the SFU on hosts of their own, WebSocket upgrade, tunnel timeouts",
    "MX16": "Synapse workers: endpoint classes to worker pools, sticky keys, the main process when a pool is down",
}

# What a proxy answers itself (MX11): status -> (errcode, error). The bodies
# are canonical JSON, so that every flavour answers the same bytes.
ERRORS = {
    403: ("M_FORBIDDEN", "Forbidden"),
    404: ("M_UNRECOGNIZED", "Unrecognized request"),
    413: ("M_TOO_LARGE", "Request body too large"),
    502: ("M_UNKNOWN", "The homeserver is not reachable"),
    503: ("M_UNKNOWN", "The homeserver is not available"),
    504: ("M_UNKNOWN", "The homeserver did not answer in time"),
}

# Seconds a client should wait before retrying after a 502/503/504.
RETRY_AFTER = 5

STICKY_KEYS = (None, "user", "room", "source")

# What each stickiness key hashes (MX16), for every flavour alike:
#   user    the Authorization header (the access token); without it, the access_token
#           query parameter where the flavour can read one
#   room    the first group of ``regex`` on the normalised path (the room ID, or the
#           room alias or ID of a join or knock); a path without one: the whole path
#   source  the client's address as the proxy sees it (the remote server, for
#           inbound federation)
STICKY_SOURCES = {
    "user": {"header": "Authorization", "query": "access_token"},
    "room": {"regex": "^/_matrix/client/[^/]+/(?:rooms|join|knock)/([^/]+)"},
    "source": {},
}
TIMEOUT_CLASSES = ("default", "long_poll", "tunnel")
ACTIONS = ("forward", "static", "refuse")
MATCH_KINDS = ("prefix", "exact", "regex")
BALANCES = ("first", "roundrobin")

_PATH_PREFIXES = {
    "synapse": {"client": ["/_matrix", "/_synapse/client"], "admin": ["/_synapse/admin"]},
    "palpo": {"client": ["/_matrix", "/_palpo/client"], "admin": ["/_palpo/admin"]},
}
_FEDERATION_PREFIXES = ["/_matrix"]
_HEALTH_PATH = "/health"
_ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge"
_WELL_KNOWN = "/.well-known/matrix/"

# Services on a public host of their own, routed whole ("/", the URI unmodified) to
# their upstream: name -> contract IDs and timeout class. The SFU carries WebSocket
# signalling for calls that last hours: the tunnel class.
SERVICES = {
    "mas": {"behaviours": ["MX13", "MX04"], "timeout": "default"},
    "rtc_jwt": {"behaviours": ["MX14", "MX04"], "timeout": "default"},
    "rtc_sfu": {"behaviours": ["MX14", "MX04", "MX08"], "timeout": "tunnel"},
}
# The client endpoints MAS answers in Synapse's place (its compatibility layer),
# each a prefix (login/sso/redirect and logout/all are below them), under every
# client API version.
MAS_COMPAT_VERSIONS = ("api/v1", "r0", "v3", "unstable")
MAS_COMPAT_ENDPOINTS = ("login", "logout", "refresh")


class RouteTableError(ValueError):
    """A route table input breaks a rule; the message names the input."""


def _canonical(document):
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def error_document(status):
    """The Matrix error a proxy answers for ``status``: dict with status, errcode, error, body."""
    if status not in ERRORS:
        raise RouteTableError("no Matrix error is defined for status %r (defined: %s)" % (status, sorted(ERRORS)))
    errcode, error = ERRORS[status]
    document = {"status": status, "errcode": errcode, "error": error,
                "body": _canonical({"errcode": errcode, "error": error})}
    if status >= 502:
        document["retry_after"] = RETRY_AFTER
    return document


def raw_regex(kind, path):
    """PCRE/RE2 pattern the raw request URI (path and query) must match for a route (MX04).

    A prefix route admits the prefix followed by ``/``, ``?`` or the end; an exact
    route admits the path followed by ``?`` or the end. Only regular-expression
    metacharacters are escaped (with a backslash), as PCRE, RE2 and POSIX ERE read them.
    """
    escaped = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", path)
    if kind == "prefix" and path.endswith("/"):
        # "/" (a whole host) or "/dir/": anything below it.
        return "^" + escaped
    tail = "(?:[/?]|$)" if kind == "prefix" else "(?:[?]|$)"
    return "^" + escaped + tail


def _regex_parts(patterns):
    """(literal prefix, path regex, raw regex) of a regex route's patterns (each anchored with ^).

    The path regex is the alternation of the patterns, for the proxy's normalised
    path; the raw regex admits the raw request URI (path and query, MX04): a
    pattern that ends with ``$`` may be followed by a query there. The literal
    prefix is what every pattern starts with before its first metacharacter
    (where a proxy that nests regular expressions in prefix blocks puts them).
    """
    if not patterns or not all(isinstance(p, str) and p.startswith("^/") for p in patterns):
        raise RouteTableError("a regex route needs patterns, each anchored with ^/, got %r" % (patterns,))
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise RouteTableError("pattern %r is not a regular expression: %s" % (pattern, error))
    bodies = [p[1:] for p in patterns]
    raws = [b[:-1] + "(?:[?]|$)" if b.endswith("$") else b for b in bodies]
    literals = [re.match(r"[^.^$*+?()\[\]{}|\\]*", b).group(0) for b in bodies]
    prefix = literals[0]
    for literal in literals[1:]:
        while not literal.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[:prefix.rfind("/") + 1] or "/", "^(?:%s)" % "|".join(bodies), "^(?:%s)" % "|".join(raws)


def _route(route_id, behaviours, kind, path, action, **fields):
    if kind not in MATCH_KINDS:
        raise RouteTableError("route %s: match kind %r is not one of %s" % (route_id, kind, MATCH_KINDS))
    if action not in ACTIONS:
        raise RouteTableError("route %s: action %r is not one of %s" % (route_id, action, ACTIONS))
    policy = fields.pop("policy", {})
    match = {"kind": kind, "path": path, "raw_regex": raw_regex(kind, path) if kind != "regex" else None,
             "methods": fields.pop("methods", [])}
    if kind == "regex":
        match["path"], match["pattern"], match["raw_regex"] = _regex_parts(fields.pop("patterns", None))
    route = {
        "id": route_id,
        "behaviours": list(behaviours),
        "match": match,
        "action": action,
        "policy": {
            "body_limit": policy.get("body_limit"),
            "timeout": policy.get("timeout", "default"),
            "sticky": policy.get("sticky"),
        },
    }
    if route["policy"]["timeout"] not in TIMEOUT_CLASSES:
        raise RouteTableError("route %s: timeout class %r is not one of %s" % (route_id, route["policy"]["timeout"], TIMEOUT_CLASSES))
    if route["policy"]["sticky"] not in STICKY_KEYS:
        raise RouteTableError("route %s: stickiness %r is not one of %s" % (route_id, route["policy"]["sticky"], STICKY_KEYS))
    route.update(fields)
    return route


def _forward(route_id, behaviours, kind, path, upstream, body_limit, timeout="long_poll", sticky=None, allow_sources=None,
             **fields):
    fields.update({"upstream": upstream, "allow_sources": list(allow_sources or [])})
    if allow_sources:
        fields["refuse"] = error_document(403)
    return _route(route_id, behaviours, kind, path, "forward",
                  policy={"body_limit": body_limit, "timeout": timeout, "sticky": sticky}, **fields)


def _worker_routes(items, body_limit, separate):
    """({listener: [routes]}, [pools]) for the ``worker_pools`` input (see :func:`route_table`)."""
    routes, pools = {"client": [], "federation": []}, []
    if not isinstance(items, list):
        raise RouteTableError("route_table: 'worker_pools' must be a list, got %r" % (items,))
    for item in items:
        missing = [key for key in ("class", "pool", "servers", "sticky", "methods", "listeners", "patterns")
                   if key not in (item if isinstance(item, dict) else {})]
        if missing:
            name = item.get("pool") if isinstance(item, dict) else item
            raise RouteTableError("worker pool %r lacks %s" % (name, ", ".join(missing)))
        if not item["servers"]:
            raise RouteTableError("worker pool %s has no servers" % item["pool"])
        servers = []
        for server in item["servers"]:
            address, port = str(server["address"]).strip("[]"), int(server["port"])
            servers.append({"name": server["name"], "socket": "", "address": address, "port": port,
                            "endpoint": _endpoint(address, port)})
        # Every worker of the pool down: the main process answers (Synapse serves every endpoint there).
        pools.append({"name": item["pool"], "servers": servers, "health_path": _HEALTH_PATH,
                      "balance": "first" if len(servers) == 1 else "roundrobin", "fallback": "homeserver"})
        for listener in item["listeners"]:
            if listener not in routes:
                raise RouteTableError("worker pool %s: listener %r is not client or federation" % (item["pool"], listener))
            # Single-port mode: the client listener serves federation too.
            target = listener if separate else "client"
            route_id = "workers-" + _slug(item["class"])
            if any(r["id"] == route_id for r in routes[target]):
                continue
            routes[target].append(_forward(
                route_id, ["MX16", "MX01" if listener == "client" else "MX02", "MX04", "MX08"], "regex", None, item["pool"],
                body_limit, sticky=item["sticky"], methods=list(item["methods"]), patterns=list(item["patterns"])))
    return routes, pools


def _refuse(route_id, behaviours, kind, path, status):
    document = error_document(status)
    return _route(route_id, behaviours, kind, path, "refuse", **document)


def _static(route_id, behaviours, path, body):
    return _route(route_id, behaviours, "exact", path, "static",
                  body=body, content_type="application/json", cors=True)


def _slug(path):
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _require(spec, key, kinds):
    if key not in spec:
        raise RouteTableError("route_table: the input has no %r" % key)
    value = spec[key]
    if not isinstance(value, kinds):
        raise RouteTableError("route_table: %r must be %s, got %r" % (key, " or ".join(k.__name__ for k in kinds), value))
    return value


def _upstream_pool(spec):
    socket = spec.get("homeserver_socket") or ""
    address = str(spec.get("homeserver_address") or "")
    port = int(spec.get("homeserver_port") or 0)
    if not socket and (not address or not 0 < port < 65536):
        raise RouteTableError("route_table: homeserver_address and homeserver_port (1-65535), or homeserver_socket, are required")
    host = address.strip("[]")
    server = {
        "name": "main",
        "socket": socket,
        "address": host if not socket else "",
        "port": port if not socket else 0,
        # host:port as most proxies write it (IPv6 bracketed), or the socket path.
        "endpoint": socket if socket else _endpoint(host, port),
    }
    return {"name": "homeserver", "servers": [server], "health_path": _HEALTH_PATH, "balance": "first", "fallback": None}


def _endpoint(address, port):
    return "[%s]:%d" % (address, port) if ":" in address else "%s:%d" % (address, port)


def _services(spec):
    """{name: service} of the optional ``services`` input, checked (see :data:`SERVICES`)."""
    services = spec.get("services") or {}
    if not isinstance(services, dict):
        raise RouteTableError("route_table: 'services' must be a dict of %s, got %r" % ("/".join(SERVICES), services))
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise RouteTableError("route_table: unknown services %s (known: %s)" % (unknown, ", ".join(SERVICES)))
    checked = {}
    for name, service in services.items():
        missing = [key for key in ("host", "port", "upstream_address", "upstream_port") if not (service or {}).get(key)]
        if missing:
            raise RouteTableError("route_table: service %s lacks %s" % (name, ", ".join(missing)))
        port, upstream_port = int(service["port"]), int(service["upstream_port"])
        if not 0 < port < 65536 or not 0 < upstream_port < 65536:
            raise RouteTableError("route_table: service %s: ports must be 1-65535, got %r and %r" % (name, port, upstream_port))
        checked[name] = {"host": str(service["host"]).lower(), "port": port,
                         "address": str(service["upstream_address"]).strip("[]"), "upstream_port": upstream_port}
    return checked


def route_table(spec):
    """Return the route table for the shared facts in ``spec`` (see the module docstring).

    ``spec`` keys: homeserver_flavour, homeserver_fqdn, server_name_host, client_port,
    federation_port, well_known_placement (client, federation, separate, none), optional well_known_site
    (own, operator: the separate well-known vhost is marked ``snippet``, for the operator's site to include),
    well_known_server_body, well_known_client_body, admin_allowed_networks,
    max_body_bytes, homeserver_address, homeserver_port, homeserver_socket,
    acme (bool), acme_challenge_address, acme_challenge_port, http_port, https_redirect_port_suffix;
    optional ``services``: {name: {host, port, upstream_address, upstream_port}} for the names
    of :data:`SERVICES`, each a listener of its own routed whole to its upstream (with ``mas``,
    the client listener's login, logout and refresh go to MAS too); optional ``extra_routes``: routes to add (see :func:`extra_route`), each after the
    routes its vhost already has.
    """
    if not isinstance(spec, dict):
        raise RouteTableError("route_table: the input must be a dict of the shared facts, got %r" % type(spec).__name__)
    flavour = _require(spec, "homeserver_flavour", (str,))
    if flavour not in _PATH_PREFIXES:
        raise RouteTableError("route_table: homeserver_flavour must be one of %s, got %r" % (sorted(_PATH_PREFIXES), flavour))
    fqdn = _require(spec, "homeserver_fqdn", (str,)).lower()
    name_host = _require(spec, "server_name_host", (str,)).lower()
    client_port = int(_require(spec, "client_port", (int, str)))
    federation_port = int(_require(spec, "federation_port", (int, str)))
    placement = _require(spec, "well_known_placement", (str,))
    site = spec.get("well_known_site", "own")
    if site not in ("own", "operator"):
        raise RouteTableError("route_table: well_known_site must be own or operator, got %r" % site)
    if site == "operator" and placement != "separate":
        raise RouteTableError("route_table: well_known_site operator needs the separate well-known placement (a server name host"
                              " other than the homeserver's), got placement %r" % placement)
    if placement not in ("client", "federation", "separate", "none"):
        raise RouteTableError("route_table: well_known_placement must be client, federation, separate or none, got %r" % placement)
    networks = [str(n) for n in _require(spec, "admin_allowed_networks", (list,))]
    body_limit = int(_require(spec, "max_body_bytes", (int, str)))
    separate = federation_port != client_port
    prefixes = _PATH_PREFIXES[flavour]
    pool = _upstream_pool(spec)
    services = _services(spec)
    worker_routes, worker_pools = _worker_routes(spec.get("worker_pools") or [], body_limit, separate)

    def well_known_routes():
        return [
            _static("well-known-server", ["MX03", "MX11"], _WELL_KNOWN + "server", _require(spec, "well_known_server_body", (str,))),
            _static("well-known-client", ["MX03", "MX11"], _WELL_KNOWN + "client", _require(spec, "well_known_client_body", (str,))),
        ]

    def admin_routes(allowed):
        routes = []
        for prefix in prefixes["admin"]:
            if allowed:
                routes.append(_forward("admin-" + _slug(prefix), ["MX06", "MX04"], "prefix", prefix, "homeserver",
                                       body_limit, timeout="default", allow_sources=allowed))
            else:
                routes.append(_refuse("admin-" + _slug(prefix), ["MX06", "MX11"], "prefix", prefix, 403))
        return routes

    vhosts = []
    client_routes = admin_routes(networks)
    if "mas" in services:
        client_routes += [_forward("mas-" + _slug(version + "-" + endpoint), SERVICES["mas"]["behaviours"], "prefix",
                                   "/_matrix/client/%s/%s" % (version, endpoint), "mas", body_limit, timeout="default")
                          for version in MAS_COMPAT_VERSIONS for endpoint in MAS_COMPAT_ENDPOINTS]
    client_routes += worker_routes["client"]
    client_routes += [_forward("api-" + _slug(p), ["MX01", "MX04", "MX08"], "prefix", p, "homeserver", body_limit)
                      for p in prefixes["client"]]
    client_routes.append(_forward("health", ["MX07", "MX04"], "exact", _HEALTH_PATH, "homeserver", body_limit, timeout="default"))
    if placement == "client":
        client_routes += well_known_routes()
    vhosts.append({
        "name": "client", "port": client_port, "tls": True, "hosts": [fqdn], "any_host": False,
        "serves_federation": not separate, "routes": client_routes, "fallback": error_document(404),
    })
    if separate:
        federation_routes = admin_routes([]) + worker_routes["federation"]
        federation_routes += [_forward("federation-" + _slug(p), ["MX02", "MX04", "MX08"], "prefix", p, "homeserver", body_limit)
                              for p in _FEDERATION_PREFIXES]
        if placement == "federation":
            federation_routes += well_known_routes()
        # Other servers ask for the delegated name or, without delegation, the server name.
        well_known_port = int(spec.get("well_known_port", 443))
        hosts = [fqdn] + ([name_host] if name_host != fqdn and federation_port != well_known_port else [])
        vhosts.append({
            "name": "federation", "port": federation_port, "tls": True, "hosts": hosts, "any_host": True,
            "serves_federation": True, "routes": federation_routes, "fallback": error_document(404),
        })
    if placement == "separate":
        # With well_known_site "operator" the operator's website for the server name's host
        # includes these routes as a snippet (docs/alongside.md): no listener of the role's.
        vhosts.append({
            "name": "well_known", "port": int(spec.get("well_known_port", 443)), "tls": True, "hosts": [name_host],
            "any_host": False, "serves_federation": False, "routes": well_known_routes(), "fallback": error_document(404),
            "snippet": site == "operator",
        })

    upstreams = [pool] + worker_pools
    if spec.get("acme"):
        challenge = {"name": "acme", "health_path": None, "balance": "first", "fallback": None, "servers": [{
            "name": "certbot", "socket": "", "address": spec["acme_challenge_address"], "port": int(spec["acme_challenge_port"]),
            "endpoint": _endpoint(spec["acme_challenge_address"], int(spec["acme_challenge_port"]))}]}
        upstreams.append(challenge)
        vhosts.append({
            "name": "http", "port": int(spec.get("http_port", 80)), "tls": False, "hosts": [], "any_host": True,
            "serves_federation": False,
            "routes": [_forward("acme-challenge", ["MX12"], "prefix", _ACME_CHALLENGE_PREFIX, "acme", body_limit, timeout="default")],
            "fallback": {"redirect": "https", "port_suffix": spec.get("https_redirect_port_suffix", ""), "status": 301},
        })

    for name, service in SERVICES.items():
        if name not in services:
            continue
        given = services[name]
        upstreams.append({"name": name, "health_path": None, "balance": "first", "fallback": None, "servers": [{
            "name": name, "socket": "", "address": given["address"], "port": given["upstream_port"],
            "endpoint": _endpoint(given["address"], given["upstream_port"])}]})
        vhosts.append({
            "name": name, "port": given["port"], "tls": True, "hosts": [given["host"]], "any_host": False,
            "serves_federation": False, "fallback": error_document(404),
            "routes": [_forward(_slug(name), service["behaviours"], "prefix", "/", name, body_limit, timeout=service["timeout"])],
        })

    for vhost in vhosts:
        vhost.setdefault("snippet", False)
    by_name = {vhost["name"]: vhost for vhost in vhosts}
    for item in spec.get("extra_routes") or []:
        vhost, route = extra_route(item)
        if vhost not in by_name:
            raise RouteTableError("extra route %s: vhost %r is not served here (served: %s)" % (route["id"], vhost, sorted(by_name)))
        by_name[vhost]["routes"].append(route)

    table = {"vhosts": vhosts, "upstreams": upstreams, "errors": {str(s): error_document(s) for s in sorted(ERRORS)},
             # What each stickiness key hashes (MX16); the same for every flavour.
             "sticky": {key: dict(value) for key, value in STICKY_SOURCES.items()},
             "ports": sorted({v["port"] for v in vhosts if v["tls"] and not v["snippet"]}),
             # The homeserver flavour's URL layout, for what is not a proxy route
             # (the homeserver role's health wait, the matrix scenario's checks).
             "paths": {"client": list(prefixes["client"]), "admin": list(prefixes["admin"]),
                       "federation": list(_FEDERATION_PREFIXES), "health": _HEALTH_PATH,
                       "acme_challenge": _ACME_CHALLENGE_PREFIX + "/"}}
    check_table(table)
    return table


def extra_route(item):
    """(vhost name, route) for one extra route given as data.

    ``item``: ``vhost`` (client, federation, well_known), ``id``, ``kind`` (prefix or exact),
    ``path``, ``action`` and, by action: ``upstream`` (forward; the table's ``homeserver`` pool
    unless named), ``status`` (refuse: one of ERRORS), ``body`` (static, JSON text); optional
    ``behaviours`` (contract IDs) and ``timeout``.
    """
    missing = [key for key in ("vhost", "id", "kind", "path", "action") if key not in item]
    if missing:
        raise RouteTableError("extra route %r lacks %s" % (item.get("id", item), ", ".join(missing)))
    if not str(item["path"]).startswith("/"):
        raise RouteTableError("extra route %s: path %r must start with /" % (item["id"], item["path"]))
    behaviours = item.get("behaviours") or []
    unknown = sorted(set(behaviours) - set(BEHAVIOURS))
    if unknown:
        raise RouteTableError("extra route %s: unknown behaviour IDs %s" % (item["id"], unknown))
    action = item["action"]
    if action == "forward" and item.get("timeout") == "tunnel" and item.get("upstream", "homeserver") == "homeserver":
        # The homeserver serves no WebSocket, and a flavour may render tunnel routes without
        # limits the homeserver's routes need (HAProxy: the chunked-body filter).
        raise RouteTableError("extra route %s: timeout tunnel is for upgraded connections; the homeserver has none"
                              % item["id"])
    if action == "forward":
        route = _forward(item["id"], behaviours or ["MX04"], item["kind"], item["path"], item.get("upstream", "homeserver"),
                         item.get("body_limit"), timeout=item.get("timeout", "default"))
    elif action == "refuse":
        route = _refuse(item["id"], behaviours or ["MX11"], item["kind"], item["path"], int(item.get("status", 404)))
    elif action == "static":
        if item["kind"] != "exact":
            raise RouteTableError("extra route %s: a static route matches one path (kind exact)" % item["id"])
        route = _static(item["id"], behaviours or ["MX11"], item["path"], str(item["body"]))
    else:
        raise RouteTableError("extra route %s: action %r is not one of %s" % (item["id"], action, ACTIONS))
    return item["vhost"], route


def check_table(table):
    """Raise RouteTableError when the table is inconsistent (unknown upstream, duplicate route, shadowed route)."""
    pools = {pool["name"] for pool in table["upstreams"]}
    for pool in table["upstreams"]:
        if pool["fallback"] is not None and pool["fallback"] not in pools:
            raise RouteTableError("pool %s falls back to unknown pool %r" % (pool["name"], pool["fallback"]))
        if pool["balance"] not in BALANCES:
            raise RouteTableError("pool %s: balance %r is not one of %s" % (pool["name"], pool["balance"], BALANCES))
    answered = {}
    for vhost in table["vhosts"]:
        for host in vhost["hosts"] if vhost["tls"] else []:
            other = answered.setdefault((host, vhost["port"]), vhost["name"])
            if other != vhost["name"]:
                raise RouteTableError("listeners %s and %s both answer %s on port %d" % (other, vhost["name"], host, vhost["port"]))
    for vhost in table["vhosts"]:
        seen = set()
        for index, route in enumerate(vhost["routes"]):
            if route["id"] in seen:
                raise RouteTableError("vhost %s: route id %s appears twice" % (vhost["name"], route["id"]))
            seen.add(route["id"])
            if route["action"] == "forward" and route["upstream"] not in pools:
                raise RouteTableError("vhost %s: route %s forwards to unknown upstream %r" % (vhost["name"], route["id"], route["upstream"]))
            for earlier in vhost["routes"][:index]:
                if _shadows(earlier["match"], route["match"]):
                    raise RouteTableError("vhost %s: route %s is never reached, %s matches first"
                                          % (vhost["name"], route["id"], earlier["id"]))


def _shadows(first, second):
    """True when every path ``second`` matches is matched by ``first`` (any method).

    A regex route is taken to shadow nothing; a prefix route shadows a regex
    route whose patterns all start under it.
    """
    if first["methods"] and set(second["methods"] or ["*"]) - set(first["methods"]):
        return False
    if first["kind"] == "regex":
        return False
    if second["kind"] == "regex":
        return first["kind"] == "prefix" and (
            second["path"] == first["path"] or second["path"].startswith(first["path"].rstrip("/") + "/"))
    if first["kind"] == "exact":
        return second["kind"] == "exact" and second["path"] == first["path"]
    return second["path"] == first["path"] or second["path"].startswith(first["path"].rstrip("/") + "/")


def routes_to(table, vhost_name, path):
    """The route of ``vhost_name`` that answers ``path`` (normalised), or None for the vhost's fallback."""
    vhost = next(v for v in table["vhosts"] if v["name"] == vhost_name)
    for route in vhost["routes"]:
        match = route["match"]
        if match["kind"] == "regex":
            if re.search(match["pattern"], path):
                return route
            continue
        if match["kind"] == "exact" and path == match["path"]:
            return route
        if match["kind"] == "prefix" and (path == match["path"] or path.startswith(match["path"].rstrip("/") + "/")):
            return route
    return None
