# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""The listeners of a live nginx configuration, read from what ``nginx -T`` prints.

``nginx -T`` tests the configuration and prints every file it read, each after a line
``# configuration file <path>:``, in the order nginx opened them (a file included
twice is printed once). This module parses those files the way nginx does (tokens,
quotes, comments, blocks), follows ``include`` from the first file (the main
configuration) with nginx's rules (a relative path is relative to the directory of
the main file, a glob matches in sorted order and ``*`` never crosses a ``/`` nor
matches a leading dot), and lists what listens:

- ``listeners(text, own_paths)``: one entry per server block and port,
  ``{"port": int, "names": [...], "default": bool, "where": "path:line",
  "context": "http" | "stream" | "mail", "close": "path:line"}``. ``names`` are the
  block's server names in lower case, ``"*"`` for the catch-all/empty name (``""``,
  ``_``) and for stream and mail servers (they answer whatever arrives); a name
  ``.example.org`` is nginx's shorthand for ``example.org`` and ``*.example.org``,
  and is listed as both. ``default`` is true for the port's default server: the
  block whose ``listen`` says ``default_server``, else the first block on that port.
  ``where`` is the line of the block's opening brace, ``close`` that of its closing
  brace. Blocks written in a file of ``own_paths`` (a path, or a directory and
  everything under it) are left out; they still count when the default is decided.
  ``extra_files`` adds or replaces files, to see the configuration as it would be.
- ``http_include_covers(text, path)``: whether an ``include`` in the ``http``
  context would read ``path`` (a file that does not exist yet).

Pure Python, no Ansible: the filters and the role's preflight call it.
"""

import fnmatch
import posixpath
import re

_HEADER = re.compile(r"^# configuration file (/.+):$")
_MAX_DEPTH = 32
# A server block without a listen directive listens on *:80 (nginx run as root).
_DEFAULT_PORT = 80


class NginxConfigError(ValueError):
    """The text is not what ``nginx -T`` prints, or a file in it cannot be parsed; the message says where."""


def split_dump(text):
    """[(path, [lines])] of the files in ``nginx -T`` output, in its order (the main file first)."""
    if not isinstance(text, str):
        raise NginxConfigError("nginx -T output must be a string, got %r" % type(text).__name__)
    files, current = [], None
    for line in text.split("\n"):
        header = _HEADER.match(line)
        if header:
            current = (header.group(1), [])
            files.append(current)
        elif current is not None:
            current[1].append(line)
    if not files:
        raise NginxConfigError("no '# configuration file <path>:' line: this is not the output of nginx -T")
    return files


class _Directive:
    __slots__ = ("name", "args", "path", "line", "children", "close")

    def __init__(self, name, args, path, line):
        self.name, self.args, self.path, self.line = name, args, path, line
        self.children, self.close = None, None


def _parse(path, lines):
    """The directives of one file, as a tree (blocks have ``children``)."""
    root = _Directive("", [], path, 0)
    root.children = []
    stack, words = [root], []
    for kind, value, line in _tokens(path, lines):
        if kind == "word":
            words.append((value, line))
        elif kind == ";":
            if not words:
                raise NginxConfigError("%s:%d: unexpected ';'" % (path, line))
            stack[-1].children.append(_Directive(words[0][0], [word for word, _line in words[1:]], path, words[0][1]))
            words = []
        elif kind == "{":
            if not words:
                raise NginxConfigError("%s:%d: unexpected '{'" % (path, line))
            block = _Directive(words[0][0], [word for word, _line in words[1:]], path, line)
            block.children = []
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        else:
            if words or len(stack) == 1:
                raise NginxConfigError("%s:%d: unexpected '}'" % (path, line))
            stack.pop().close = line
    if words or len(stack) > 1:
        raise NginxConfigError("%s: unexpected end of file" % path)
    return root.children


def _tokens(path, lines):
    """(kind, value, line) of one file: kind is "word" (quoted or not), ";", "{" or "}"."""
    text = "\n".join(lines)
    index, line, length = 0, 1, len(text)
    while index < length:
        char = text[index]
        if char in "\"'":
            quote, start_line, value, index = char, line, [], index + 1
            while True:
                if index >= length:
                    raise NginxConfigError("%s:%d: unterminated quoted string" % (path, start_line))
                char = text[index]
                if char == "\\" and index + 1 < length:
                    value.append(text[index + 1])
                    line += text[index + 1] == "\n"
                    index += 2
                    continue
                index += 1
                if char == quote:
                    break
                line += char == "\n"
                value.append(char)
            yield "word", "".join(value), start_line
            continue
        if char == "\n":
            line += 1
            index += 1
        elif char in " \t\r":
            index += 1
        elif char == "#":
            end = text.find("\n", index)
            index = length if end < 0 else end
        elif char in ";{}":
            yield char, char, line
            index += 1
        else:
            start_line, value = line, []
            while index < length:
                char = text[index]
                if char == "\\" and index + 1 < length:
                    value.append(text[index + 1])
                    index += 2
                    continue
                if char == "{" and value and value[-1] == "$":
                    end = text.find("}", index)
                    if end < 0:
                        raise NginxConfigError("%s:%d: unterminated ${...}" % (path, line))
                    value.append(text[index:end + 1])
                    index = end + 1
                    continue
                if char in " \t\r\n;{}":
                    break
                value.append(char)
                index += 1
            yield "word", "".join(value), start_line


def _glob_matches(pattern, path):
    """Whether ``path`` is one of the files glob(3) finds for ``pattern`` (``*`` stays within a segment)."""
    parts, names = pattern.split("/"), path.split("/")
    if len(parts) != len(names):
        return False
    for part, name in zip(parts, names):
        if name.startswith(".") and not part.startswith("."):
            return False
        if not fnmatch.fnmatchcase(name, part):
            return False
    return True


def _is_glob(pattern):
    return any(char in pattern for char in "*?[")


class _Config:
    """The files of one ``nginx -T`` dump, parsed, with nginx's include rules."""

    def __init__(self, text, extra_files=None):
        dump = split_dump(text)
        self.main = dump[0][0]
        self.prefix = posixpath.dirname(self.main)
        self.files = {}
        for path, content in (extra_files or {}).items():
            self.files[posixpath.normpath(str(path))] = _parse(path, str(content).split("\n"))
        for path, lines in dump:
            self.files.setdefault(path, _parse(path, lines))

    def absolute(self, pattern):
        return posixpath.normpath(posixpath.join(self.prefix, pattern))

    def included(self, pattern):
        """The dumped files an ``include pattern`` reads, in nginx's order."""
        pattern = self.absolute(pattern)
        if _is_glob(pattern):
            return sorted(path for path in self.files if _glob_matches(pattern, path))
        return [pattern] if pattern in self.files else []

    def expand(self, directives, depth=0):
        """``directives`` with every ``include`` replaced by what it reads (recursively)."""
        if depth > _MAX_DEPTH:
            raise NginxConfigError("includes nested deeper than %d levels (a loop?)" % _MAX_DEPTH)
        for directive in directives:
            if directive.name == "include" and directive.children is None and directive.args:
                for path in self.included(directive.args[0]):
                    yield from self.expand(self.files[path], depth + 1)
            else:
                yield directive


def _port(address):
    """The port of a listen directive's address; None for a UNIX socket."""
    if address.startswith("unix:"):
        return None
    if address.isdigit():
        return int(address)
    if address.startswith("["):
        rest = address[address.find("]") + 1:]
        return int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else _DEFAULT_PORT
    host, _colon, port = address.rpartition(":")
    if host and port.isdigit():
        return int(port)
    return _DEFAULT_PORT


def _names(args):
    names = []
    for name in args or [""]:
        name = name if name.startswith("~") else name.lower()
        if name in ("", "_"):
            expanded = ["*"]
        elif name.startswith(".") and len(name) > 1:
            expanded = [name[1:], "*" + name]
        else:
            expanded = [name]
        names.extend(n for n in expanded if n not in names)
    return names


def _servers(config):
    """(context, server block, [ (port, default_server) ], [names]) in the order nginx reads them."""
    found = []

    def walk(directives, context):
        for directive in config.expand(directives):
            if directive.children is None:
                continue
            if context is None and directive.name in ("http", "stream", "mail"):
                walk(directive.children, directive.name)
            elif context is not None and directive.name == "server":
                listens, names = [], []
                for inner in config.expand(directive.children):
                    if inner.children is not None or not inner.args:
                        continue
                    if inner.name == "listen":
                        port = _port(inner.args[0])
                        if port is not None:
                            listens.append((port, bool({"default_server", "default"} & set(inner.args[1:]))))
                    elif inner.name == "server_name" and context == "http":
                        names.extend(inner.args)
                if context == "http" and not listens:
                    listens = [(_DEFAULT_PORT, False)]
                found.append((context, directive, listens, _names(names) if context == "http" else ["*"]))

    walk(config.files[config.main], None)
    return found


def _own(path, own_paths):
    for own in own_paths or []:
        own = str(own).rstrip("/")
        if own and (path == own or path.startswith(own + "/")):
            return True
    return False


def listeners(text, own_paths=None, extra_files=None):
    """The listeners of the configuration ``nginx -T`` printed as ``text``, except those in ``own_paths``.

    ``extra_files`` ({path: text}) are read as if nginx had printed them too, in place of
    a printed file of the same path: what the configuration would be with them (a file
    the role is about to write, which an include of the operator's already matches).
    See the module docstring for the entries.
    """
    if own_paths is not None and (isinstance(own_paths, str) or not hasattr(own_paths, "__iter__")):
        raise NginxConfigError("own_paths must be a list of paths, got %r" % (own_paths,))
    if extra_files is not None and not isinstance(extra_files, dict):
        raise NginxConfigError("extra_files must be a dict of path: text, got %r" % (extra_files,))
    config = _Config(text, extra_files)
    servers = _servers(config)
    explicit = {}
    first = {}
    for index, (context, _block, listens, _names) in enumerate(servers):
        for port, default in listens:
            key = (context == "http", port)
            first.setdefault(key, index)
            if default:
                explicit.setdefault(key, set()).add(index)
    result = []
    for index, (context, block, listens, names) in enumerate(servers):
        if _own(block.path, own_paths):
            continue
        seen = set()
        for port, _default in listens:
            if port in seen:
                continue
            seen.add(port)
            key = (context == "http", port)
            default = index in explicit[key] if key in explicit else first[key] == index
            result.append({
                "port": port, "names": list(names), "default": context != "http" or default,
                "where": "%s:%d" % (block.path, block.line), "close": "%s:%d" % (block.path, block.close),
                "context": context,
            })
    return result


def http_include_covers(text, path):
    """Whether an ``include`` in the ``http`` context of the configuration reads ``path``."""
    config = _Config(text)
    path = posixpath.normpath(path)

    def walk(directives, in_http, depth=0):
        if depth > _MAX_DEPTH:
            raise NginxConfigError("includes nested deeper than %d levels (a loop?)" % _MAX_DEPTH)
        for directive in directives:
            if directive.name == "include" and directive.children is None and directive.args:
                pattern = config.absolute(directive.args[0])
                if in_http and (_glob_matches(pattern, path) if _is_glob(pattern) else pattern == path):
                    return True
                for included in config.included(directive.args[0]):
                    if walk(config.files[included], in_http, depth + 1):
                        return True
            elif directive.children is not None and not in_http and directive.name == "http":
                if walk(directive.children, True, depth):
                    return True
        return False

    return walk(config.files[config.main], False)
