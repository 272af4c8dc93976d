# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The operator's Apache httpd, as Apache itself reports it (mxedge.matrix.apache, alongside mode).

:func:`listeners` reads the virtual hosts of ``apache2ctl -S`` (``-D DUMP_VHOSTS``);
:func:`listen_ports` reads the ``Listen`` directives of the files Apache includes
(``grep -Hn`` over the files of ``apache2ctl -t -D DUMP_INCLUDES``). Both leave out
the role's own files (``own_paths``), so the result is what the operator runs.

``apache2ctl -S`` prints one block per address and port::

    VirtualHost configuration:
    *:443                  is a NameVirtualHost
             default server example.test (/etc/apache2/sites-enabled/example.test.conf:1)
             port 443 namevhost example.test (/etc/apache2/sites-enabled/example.test.conf:1)
                     alias www.example.test
                     wild alias *.example.test
             port 443 namevhost unrelated.test (/etc/apache2/sites-enabled/unrelated.test.conf:2)
    *:80                   127.0.0.1 (/etc/apache2/sites-enabled/000-default.conf:1)
    ServerRoot: "/etc/apache2"

A single virtual host on an address is printed on the address's own line; it is that
address's default. The name shown for a virtual host without ``ServerName`` is the
server's name (the host name), so a listener's names are what Apache matches on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import re

_ADDRESS = r"(?P<address>(?:\[[0-9A-Fa-f:.%a-z]*\]|[^\s:\[\]]+)):(?P<port>\d+|\*)"
_NAMEVHOST_HEAD = re.compile(r"^" + _ADDRESS + r"\s+is a NameVirtualHost\s*$")
_SINGLE = re.compile(r"^" + _ADDRESS + r"\s+(?P<name>\S+)\s+\((?P<where>.+:\d+)\)\s*$")
_DEFAULT = re.compile(r"^\s+default server (?P<name>\S+)\s+\((?P<where>.+:\d+)\)\s*$")
_NAMEVHOST = re.compile(r"^\s+port (?P<port>\d+|\*) namevhost (?P<name>\S+)\s+\((?P<where>.+:\d+)\)\s*$")
_ALIAS = re.compile(r"^\s+(?:wild )?alias (?P<name>\S+)\s*$")
_LISTEN = re.compile(r"^(?P<path>.+?):(?P<line>\d+):\s*Listen\s+(?P<args>.+?)\s*$", re.IGNORECASE)
_LISTEN_PORT = re.compile(r"^(?:(?:\[[^\]]*\]|[^\s\[\]]*):)?(?P<port>\d+)(?:\s|$)")


def _own(path, own_paths):
    """Whether ``path`` (a file Apache read) is one of the role's: equal to an own path, or under an own directory."""
    for own in own_paths or []:
        own = str(own)
        if path == own.rstrip("/") or path.startswith(own.rstrip("/") + "/"):
            return True
    return False


def _file_of(where):
    return where.rsplit(":", 1)[0]


def _port(text, fallback):
    return int(text) if text.isdigit() else fallback


def listeners(text, own_paths=()):
    """The operator's virtual hosts in ``apache2ctl -S`` output ``text``, without those in ``own_paths``.

    Returns a list of dicts ``{"port": int, "names": [lower-case names], "default": bool,
    "where": "path:line", "address": "*" | "<ip>" | "_default_"}`` in Apache's order; a virtual
    host listed under several addresses appears once per address (``where`` is the same).
    """
    found = []
    current = None  # the listener aliases attach to
    block = None  # {"address", "port", "default_where"} of the NameVirtualHost block being read
    for raw in (text or "").splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        head = _NAMEVHOST_HEAD.match(line)
        single = None if head else _SINGLE.match(line)
        if head:
            block = {"address": head.group("address"), "port": head.group("port"), "default": None}
            current = None
            continue
        if single:
            block = None
            current = {"port": _port(single.group("port"), 0), "names": [single.group("name").lower()],
                       "default": True, "where": single.group("where"), "address": single.group("address")}
            found.append(current)
            continue
        if not raw[:1].isspace():
            # "ServerRoot: ...", "Main DocumentRoot: ...", "VirtualHost configuration:": the vhost dump is over
            # or not yet begun
            block = None
            current = None
            continue
        default = _DEFAULT.match(line)
        if default and block is not None:
            block["default"] = (default.group("name").lower(), default.group("where"))
            current = None
            continue
        namevhost = _NAMEVHOST.match(line)
        if namevhost and block is not None:
            name, where = namevhost.group("name").lower(), namevhost.group("where")
            # The default server is the first namevhost of the block; a later one with the same
            # name and place is not.
            is_default = block["default"] == (name, where) and not any(
                item["default"] for item in found if item.get("_block") is block)
            current = {"port": _port(namevhost.group("port"), _port(block["port"], 0)), "names": [name],
                       "default": is_default, "where": where, "address": block["address"], "_block": block}
            found.append(current)
            continue
        alias = _ALIAS.match(line)
        if alias and current is not None:
            current["names"].append(alias.group("name").lower())
    result = []
    for item in found:
        item.pop("_block", None)
        if _own(_file_of(item["where"]), own_paths):
            continue
        item["names"] = list(dict.fromkeys(item["names"]))
        result.append(item)
    return result


def listen_ports(text, own_paths=()):
    """The ports of the ``Listen`` directives in ``text`` (``grep -Hn`` lines ``path:line:  Listen args``), sorted.

    Lines of files in ``own_paths`` are left out, as are commented lines. Every ``Listen``
    counts, also one inside an ``<IfModule>`` that is not loaded yet: the role may load
    that module (Debian's ports.conf lists 443 under ``<IfModule ssl_module>``), and a
    second ``Listen`` on a port is fatal to Apache.
    """
    ports = set()
    for line in (text or "").splitlines():
        match = _LISTEN.match(line.rstrip())
        if not match or _own(match.group("path"), own_paths):
            continue
        port = _LISTEN_PORT.match(match.group("args"))
        if port:
            ports.add(int(port.group("port")))
    return sorted(ports)
