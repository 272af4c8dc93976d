# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""fnmatch(3) patterns for relayd.conf(5) filter rules, computed from the route table.

relayd matches a request with fnmatch(3), flags 0, on the raw request path (not
percent-decoded, not normalised, query split off) and on raw header values. It
has no regular expressions and no numeric comparison, so what the route table
says with a regular expression or a number is written here as fnmatch patterns:

- ``content_length_over(limit)``: Content-Length values above ``limit`` bytes.
- ``route_path_patterns(match)``: the raw paths a route answers, which is
  exactly the route's raw-URI rule (MX04, ``raw_regex``) on relayd's raw path.
- ``namespace_patterns(paths)``: the first path segments a homeserver owns
  ("namespaces" like ``/_synapse/``) and every spelling of them with a
  percent-encoded character, so that the rest of a namespace and its encoded
  spellings can be refused before anything further on decodes them.

Nothing here knows a Matrix path: the paths come from the route table.
"""

import re

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import raw_regex

# fnmatch(3) metacharacters; relayd.conf has no way to quote them (a backslash
# is an escape in fnmatch but relayd's tests refuse to guess at it).
_FNMATCH_SPECIAL = re.compile(r"[*?\[\]\\]")


class RelaydPatternError(ValueError):
    """The input cannot be written as relayd fnmatch patterns; the message says why."""


def content_length_over(limit):
    """fnmatch patterns matching exactly the decimal integers above ``limit``.

    One pattern for "more digits than the limit" and, for each digit of the
    limit below 9, one for "same digits so far, then a larger digit, then any".
    Values with leading zeros are not produced by HTTP clients and are not covered.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        try:
            limit = int(str(limit), 10)
        except ValueError:
            raise RelaydPatternError("body limit must be a non-negative integer, got %r" % (limit,)) from None
    if limit < 0:
        raise RelaydPatternError("body limit must be a non-negative integer, got %r" % (limit,))
    digits = str(limit)
    patterns = ["?" * (len(digits) + 1) + "*"]
    for index, digit in enumerate(digits):
        if digit != "9":
            patterns.append(digits[:index] + "[%d-9]" % (int(digit) + 1) + "?" * (len(digits) - index - 1))
    return patterns


def _check_path(path):
    if not isinstance(path, str) or not path.startswith("/"):
        raise RelaydPatternError("a route path must be a string starting with '/', got %r" % (path,))
    if _FNMATCH_SPECIAL.search(path):
        raise RelaydPatternError("route path %r holds an fnmatch(3) metacharacter relayd cannot match literally" % path)
    if '"' in path or any(ord(c) < 0x21 or ord(c) > 0x7E for c in path):
        raise RelaydPatternError("route path %r holds a character relayd.conf cannot quote" % path)


def route_path_patterns(match):
    """The fnmatch patterns of relayd's raw path that a route's ``match`` answers.

    ``match`` is a route table match (kind, path, raw_regex). relayd compares the
    raw path without the query, so an exact route is its path, and a prefix route
    is its path or anything below it (``/p``, ``/p/...``; never ``/pfoo``), and one whose
    path ends in "/" (``/dir/``, or ``/`` for a whole host) anything below that path. That is
    the route's raw-URI rule (``raw_regex``) applied to the raw path; a raw_regex
    other than the table's standard one for the kind and path cannot be written
    in relayd and is refused rather than silently dropped.
    """
    if not isinstance(match, dict):
        raise RelaydPatternError("a route match must be a dict, got %r" % type(match).__name__)
    kind = match.get("kind")
    path = match.get("path")
    _check_path(path)
    if kind not in ("prefix", "exact"):
        raise RelaydPatternError("route match kind must be prefix or exact, got %r" % (kind,))
    wanted = match.get("raw_regex")
    if wanted is not None and wanted != raw_regex(kind, path):
        raise RelaydPatternError("relayd cannot express the raw-URI rule %r of %s route %r: only %r"
                                 % (wanted, kind, path, raw_regex(kind, path)))
    if kind == "exact":
        return [path]
    if path.endswith("/"):
        # raw_regex "^/dir/": below the directory only ("/dir" is another path); "/": every path.
        return [path + "*"]
    return [path, path + "/*"]


def _encoded_spellings(namespace):
    """``/_synapse/`` -> ``/%*``, ``/_%*``, ..., ``/_synapse%*``: every spelling whose first
    percent sign falls inside the namespace segment or replaces its closing slash."""
    return [namespace[:index] + "%*" for index in range(1, len(namespace))]


def namespace_patterns(paths):
    """Namespaces of the given route paths and the patterns that refuse around them.

    A namespace is the first segment of a path that has more than one segment
    (``/_synapse/admin`` -> ``/_synapse/``): the homeserver owns it, but only some
    of it is routed. Returns a dict:

    - ``namespaces``: the namespaces, in order of first appearance;
    - ``rest``: one pattern per namespace for everything below it (``/_synapse/*``);
    - ``encoded``: the percent-encoded spellings of every namespace (no duplicates).
    """
    if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__"):
        raise RelaydPatternError("paths must be a list of route paths, got %r" % (paths,))
    namespaces = []
    for path in paths:
        _check_path(path)
        segments = path.strip("/").split("/")
        if len(segments) < 2 or not segments[0]:
            continue
        namespace = "/" + segments[0] + "/"
        if namespace not in namespaces:
            namespaces.append(namespace)
    encoded = []
    for namespace in namespaces:
        for pattern in _encoded_spellings(namespace):
            if pattern not in encoded:
                encoded.append(pattern)
    return {"namespaces": namespaces, "rest": [ns + "*" for ns in namespaces], "encoded": encoded}
