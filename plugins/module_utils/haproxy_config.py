# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The operator's HAProxy configuration, as the alongside mode of mxedge.matrix.haproxy needs it.

Pure Python (no Ansible imports): the role runs this file on the target with
``python3 haproxy_config.py <command> ...`` (``ansible.builtin.script``), read-only;
the unit tests import it.

* :func:`listeners` turns the configuration text into the operator listeners of
  ``docs/alongside.md`` (one per frontend or listen section and TCP port it binds).
* :func:`join` makes the two marked edits that let the role share a port with the
  operator's frontend: the role's certificate added to its TLS ``bind`` line(s) and
  ONE ``use_backend`` line (marked) before its first ``use_backend``; :func:`unjoin`
  takes exactly those out again, so the file is byte-identical to before.

HAProxy cannot share an address:port between two frontends (with SO_REUSEPORT the
kernel would split the connections at random), hence the join instead of a second
frontend (docs/haproxy.md, "Alongside the operator's HAProxy").
"""

from __future__ import absolute_import, division, print_function

import json
import os
import re
import sys

__metaclass__ = type  # pylint: disable=invalid-name

# The end of the one line the role adds to an operator's frontend.
MARKER = "# mxedge.matrix.haproxy"

SECTION_KEYWORDS = frozenset((
    "global", "defaults", "frontend", "backend", "listen", "userlist", "peers", "resolvers", "mailers",
    "program", "http-errors", "ring", "cache", "fcgi-app", "crt-store", "traces", "log-forward",
))
# Fetches whose value is the requested host name (HTTP/2 :authority included) or the TLS SNI.
_HOST_FETCH = re.compile(
    r"^(?:req\.)?(?:hdr|fhdr|hdr_dom|hdr_str|hdr_end)\(host\)|^(?:req\.)?(?:ssl_fc_sni|ssl_sni|req_ssl_sni)\b"
    r"|^(?:hdr_dom|hdr_end|hdr_str)\(host\)|^ssl_fc_sni(?:_end|_reg)?$|^base_dom$", re.IGNORECASE)
_HOSTNAME = re.compile(r"^[a-z0-9*]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$")


class HAProxyConfigError(Exception):
    """The configuration text cannot be read the way this module needs."""


def words(line):
    """Split one configuration line into ``(word, start, end)`` like HAProxy does.

    Whitespace separates words; single and double quotes group, a backslash escapes the
    next character; an unquoted ``#`` starts a comment. ``start``/``end`` index ``line``.
    """
    result = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t\r\n":
            i += 1
        if i >= n or line[i] == "#":
            break
        start, word, quote = i, [], None
        while i < n:
            char = line[i]
            if quote:
                if char == quote:
                    quote = None
                elif char == "\\" and quote == '"' and i + 1 < n:
                    i += 1
                    word.append(line[i])
                else:
                    word.append(char)
            elif char in "'\"":
                quote = char
            elif char == "\\" and i + 1 < n:
                i += 1
                word.append(line[i])
            elif char in " \t\r\n" or char == "#":
                break
            else:
                word.append(char)
            i += 1
        result.append(("".join(word), start, i))
    return result


def _ports(address):
    """TCP ports of a bind address (``:443``, ``*:443``, ``[::]:443``, ``ipv4@0.0.0.0:80-81``), or []."""
    if re.match(r"^(unix|abns|abnsz|fd|sockpair|quic4|quic6|udp|udp4|udp6|uxdg|uxst)@", address, re.IGNORECASE):
        return []
    address = re.sub(r"^(ipv4|ipv6|tcp|tcp4|tcp6)@", "", address, flags=re.IGNORECASE)
    if address.startswith("/"):
        return []
    match = re.search(r":([0-9]+)(?:-([0-9]+))?$", address)
    if not match:
        return []
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if last < first or last - first > 1024:
        return [first]
    return list(range(first, last + 1))


def _read(text):
    """``text`` as a list of ``(path, text)``: a string (one file), a dict or a list of pairs."""
    if isinstance(text, str):
        return [("haproxy.cfg", text)]
    if isinstance(text, dict):
        return [(str(path), str(body)) for path, body in text.items()]
    if isinstance(text, (list, tuple)):
        pairs = []
        for item in text:
            if isinstance(item, dict):
                pairs.append((str(item["path"]), str(item["text"])))
            else:
                path, body = item
                pairs.append((str(path), str(body)))
        return pairs
    raise HAProxyConfigError("the configuration must be a string, a dict of path: text, or a list of (path, text)")


def _host_patterns(tokens):
    """Host names in one ACL expression ``fetch [flags] patterns`` (list of words), or []."""
    if not tokens or not _HOST_FETCH.search(tokens[0]):
        return []
    fetch = tokens[0].lower()
    names, method, i = [], None, 1
    while i < len(tokens):
        word = tokens[i]
        if word == "--":
            i += 1
            break
        if word in ("-i", "-n"):
            i += 1
        elif word == "-m" and i + 1 < len(tokens):
            method = tokens[i + 1]
            i += 2
        elif word in ("-f", "-M") and i + 1 < len(tokens):
            i += 2
        elif word.startswith("-") and len(word) > 1 and not word[1:2].isdigit():
            i += 1
        else:
            break
    if method in ("reg", "beg", "sub", "len", "found", "int", "ip", "bool") or "_reg" in fetch or "hdr_beg" in fetch:
        return []
    for word in tokens[i:]:
        if word in ("||", "or", "!", "{", "}"):
            break
        name = word.lower().rstrip(".")
        if name.endswith(":443") or name.endswith(":80"):
            name = name.rsplit(":", 1)[0]
        if _HOSTNAME.match(name) and "." in name:
            names.append(name)
    return names


def _conditions(tokens):
    """Host names named by the anonymous ACLs ``{ fetch ... }`` among ``tokens``."""
    names = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "{":
            end = tokens.index("}", i) if "}" in tokens[i:] else len(tokens)
            names.extend(_host_patterns(tokens[i + 1:end]))
            i = end
        i += 1
    return names


def sections(text, own_paths=()):
    """The sections of the configuration files ``text`` (see :func:`_read`) but those in ``own_paths``.

    Each: ``kind``, ``name``, ``path``, ``line`` (1-based), ``last`` (its last
    directive's line), ``binds`` (``line``, ``ports``, ``ssl``, ``crts``, ``crt_lists``),
    ``hosts`` (names its host ACLs and conditions name), ``default_backend`` (bool),
    ``first_use_backend`` (line or None), ``mode``, ``marked`` (lines ending with :data:`MARKER`).
    """
    own = {os.path.normpath(str(path)) for path in own_paths or ()}
    result = []
    for path, body in _read(text):
        if os.path.normpath(path) in own:
            continue
        current = None
        for number, line in enumerate(body.splitlines(), start=1):
            spans = words(line)
            if not spans:
                continue
            tokens = [word for word, _start, _end in spans]
            keyword = tokens[0].lower()
            if keyword in SECTION_KEYWORDS:
                current = {"kind": keyword, "name": tokens[1] if len(tokens) > 1 and tokens[1] != "from" else "",
                           "path": path, "line": number, "last": number, "binds": [], "hosts": [],
                           "default_backend": False, "first_use_backend": None, "mode": None, "marked": []}
                result.append(current)
                continue
            if current is None:
                continue
            current["last"] = number
            if line.rstrip().endswith(MARKER):
                current["marked"].append(number)
                continue
            if keyword == "bind" and len(tokens) > 1:
                ports = []
                for address in tokens[1].split(","):
                    ports.extend(_ports(address))
                params = tokens[2:]
                current["binds"].append({
                    "line": number, "ports": ports, "ssl": "ssl" in params,
                    "crts": [params[k + 1] for k in range(len(params) - 1) if params[k] == "crt"],
                    "crt_lists": [params[k + 1] for k in range(len(params) - 1) if params[k] == "crt-list"],
                })
            elif keyword == "mode" and len(tokens) > 1:
                current["mode"] = tokens[1]
            elif keyword == "acl" and len(tokens) > 2:
                current["hosts"].extend(_host_patterns(tokens[2:]))
            elif keyword == "default_backend":
                current["default_backend"] = True
            elif keyword == "use_backend" and current["first_use_backend"] is None:
                current["first_use_backend"] = number
            if keyword != "acl":
                current["hosts"].extend(_conditions(tokens))
    for section in result:
        section["hosts"] = sorted(set(section["hosts"]))
    return result


def listeners(text, own_paths=()):
    """The operator listeners (docs/alongside.md) of the configuration ``text``, minus ``own_paths``.

    One per frontend or listen section and TCP port it binds: ``port``, ``names`` (the host
    names of its simple host ACLs, ``host``/SNI equal to a name; ``*`` added when none is
    recognisable or it has a ``default_backend``, i.e. it answers other names too),
    ``default`` (true: a HAProxy frontend is alone on its port), ``where``
    (``frontend NAME (path:line)``), ``frontend``, ``ssl``.
    """
    result = []
    for section in sections(text, own_paths):
        if section["kind"] not in ("frontend", "listen"):
            continue
        names = list(section["hosts"])
        if not names or section["default_backend"]:
            names.append("*")
        seen = {}
        for bind in section["binds"]:
            for port in bind["ports"]:
                if port in seen:
                    seen[port]["ssl"] = seen[port]["ssl"] or bind["ssl"]
                    continue
                seen[port] = {
                    "port": port, "names": names, "default": True, "frontend": section["name"], "ssl": bind["ssl"],
                    "where": "%s %s (%s:%d)" % (section["kind"], section["name"], section["path"], section["line"]),
                }
                result.append(seen[port])
    return result


def _find(text, frontend):
    found = [section for section in sections(text) if section["kind"] in ("frontend", "listen")
             and section["name"] == frontend]
    if not found:
        raise HAProxyConfigError("no frontend or listen section named %r" % frontend)
    return found[0]


def unjoin(text, crt=""):
    """``text`` without the role's edits: its marked lines, and `` crt <crt>`` on bind lines."""
    lines = text.splitlines(True)
    out = []
    for line in lines:
        if line.rstrip("\r\n").rstrip().endswith(MARKER):
            if line == lines[-1] and not line.endswith("\n") and out:
                # Appended to a file without a final newline: that file had none.
                out[-1] = out[-1].rstrip("\r\n")
            continue
        if crt and line.lstrip().startswith("bind"):
            line = line.replace(" crt %s" % crt, "", 1)
        out.append(line)
    return "".join(out)


def _provides(bind, crt, isdir):
    """Whether the bind line's own crt arguments already load ``crt``."""
    for path in bind["crts"]:
        if path == crt:
            return True
        if (path.endswith("/") or isdir(path)) and os.path.dirname(crt) == path.rstrip("/"):
            return True
    return False


def join(text, frontend, line, crt="", port=None, isdir=os.path.isdir):
    """``text`` with the role's edits in section ``frontend`` (after :func:`unjoin`).

    ``line``: the ``use_backend ...`` directive (without indentation or marker), inserted
    before the section's first ``use_backend`` (so that it is evaluated first), else after
    its last directive. ``crt``: the role's certificate, `` crt <crt>`` appended to the
    section's TLS bind lines on ``port`` (before a comment), unless a ``crt`` argument
    there already loads it (the same file, or its directory).
    """
    text = unjoin(text, crt)
    section = _find(text, frontend)
    lines = text.splitlines(True)
    if crt:
        for bind in section["binds"]:
            if not bind["ssl"] or (port is not None and int(port) not in bind["ports"]) or _provides(bind, crt, isdir):
                continue
            raw = lines[bind["line"] - 1]
            # After the line's last word (before a comment): the operator's certificates,
            # loaded first, stay the default for clients without SNI, and the edit is an
            # addition at the end of the line.
            at = words(raw)[-1][2]
            lines[bind["line"] - 1] = raw[:at] + " crt " + crt + raw[at:]
    where = section["first_use_backend"] or section["last"] + 1
    reference = lines[(section["first_use_backend"] or section["last"]) - 1]
    indent = re.match(r"^[ \t]*", reference).group(0) or "    "
    eol = "\r\n" if "\r\n" in text else "\n"
    added = "%s%s %s%s" % (indent, line, MARKER, eol)
    if where - 1 == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += eol
        added = added[:-len(eol)]
    lines.insert(where - 1, added)
    return "".join(lines)


def _main(argv):
    """``listeners [--own PATH]... FILE...`` / ``join FILE FRONTEND LINE CRT PORT`` / ``unjoin FILE CRT``."""
    command, args = argv[0], argv[1:]
    if command == "listeners":
        own, files = [], []
        while args:
            if args[0] == "--own" and len(args) > 1:
                own.append(args[1])
                args = args[2:]
            else:
                files.append(args[0])
                args = args[1:]
        texts = []
        for path in files:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                texts.append((path, handle.read()))
        found = sections(texts, own)
        return {"listeners": listeners(texts, own),
                "frontends": [dict(s, port_list=sorted({p for b in s["binds"] for p in b["ports"]})) for s in found
                              if s["kind"] in ("frontend", "listen")]}
    with open(args[0], encoding="utf-8", newline="") as handle:
        body = handle.read()
    if command == "join":
        new = join(body, args[1], args[2], args[3], int(args[4]) if args[4] else None)
    elif command == "unjoin":
        new = unjoin(body, args[1])
    else:
        raise HAProxyConfigError("unknown command %r" % command)
    return {"text": new, "changed": new != body}


def _run(argv):
    """The command line: JSON on stdout; exit status 1 with ``{"failed": true, "msg": ...}``."""
    try:
        sys.stdout.write(json.dumps(_main(argv), sort_keys=True) + "\n")
        return 0
    except (HAProxyConfigError, OSError, IndexError, ValueError) as error:
        sys.stdout.write(json.dumps({"failed": True, "msg": str(error)}) + "\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(_run(sys.argv[1:]))
