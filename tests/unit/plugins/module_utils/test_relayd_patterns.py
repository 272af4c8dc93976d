"""relayd fnmatch patterns computed from the route table (module_utils/relayd_patterns.py and its filters)."""

import fnmatch
import random

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.mxedge.matrix.plugins.filter import relayd_body_limit_patterns as body_plugin
from ansible_collections.mxedge.matrix.plugins.filter import relayd_namespace_patterns as namespace_plugin
from ansible_collections.mxedge.matrix.plugins.filter import relayd_path_patterns as path_plugin
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import raw_regex
from ansible_collections.mxedge.matrix.plugins.module_utils.relayd_patterns import (
    RelaydPatternError,
    content_length_over,
    namespace_patterns,
    route_path_patterns,
)


def relayd_fnmatch(pattern, text):
    """fnmatch(3) with flags 0, as relayd calls it (``*`` crosses ``/``)."""
    return fnmatch.fnmatchcase(text, pattern)


# --------------------------------------------------------------------------
# Content-Length above a limit
# --------------------------------------------------------------------------

@pytest.mark.parametrize("limit, patterns", [
    (52428800, ["?????????*", "[6-9]???????", "5[3-9]??????", "52[5-9]?????", "524[3-9]????", "5242[9-9]???",
                "52428[9-9]??", "524288[1-9]?", "5242880[1-9]"]),
    (100, ["????*", "[2-9]??", "1[1-9]?", "10[1-9]"]),
    (9, ["??*"]),
    (99, ["???*"]),
    (0, ["??*", "[1-9]"]),
    (1048576, ["????????*", "[2-9]??????", "1[1-9]?????", "10[5-9]????", "104[9-9]???", "1048[6-9]??",
               "10485[8-9]?", "104857[7-9]"]),
])
def test_content_length_patterns(limit, patterns):
    assert content_length_over(limit) == patterns
    assert body_plugin.relayd_body_limit_patterns(limit) == patterns


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 99, 100, 999999, 1000000, 1048576, 52428800, 104857600, 10485760000]
                         + [random.Random(seed).randint(1, 10 ** 11) for seed in range(40)])
def test_content_length_patterns_are_exact(limit):
    patterns = content_length_over(limit)
    rng = random.Random(limit)
    values = {0, 1, limit - 1, limit, limit + 1, limit * 10, 10 ** len(str(limit)), 10 ** (len(str(limit)) - 1)}
    values |= {rng.randint(0, limit * 3 + 10) for _draw in range(300)}
    for value in sorted(v for v in values if v >= 0):
        assert any(relayd_fnmatch(p, str(value)) for p in patterns) == (value > limit), (limit, value)


@pytest.mark.parametrize("bad", [-1, "many", None, 1.5, True, "-3"])
def test_content_length_refuses_what_is_not_a_limit(bad):
    with pytest.raises(RelaydPatternError, match="non-negative integer"):
        content_length_over(bad)
    with pytest.raises(AnsibleFilterError, match="relayd_body_limit_patterns: body limit"):
        body_plugin.relayd_body_limit_patterns(bad)


def test_content_length_accepts_digit_strings():
    assert content_length_over("100") == content_length_over(100)


# --------------------------------------------------------------------------
# Route paths (MX04: the raw-URI rule on relayd's raw path)
# --------------------------------------------------------------------------

def match(kind, path, **extra):
    return dict({"kind": kind, "path": path, "raw_regex": raw_regex(kind, path), "methods": []}, **extra)


@pytest.mark.parametrize("kind, path, patterns", [
    ("prefix", "/_matrix", ["/_matrix", "/_matrix/*"]),
    ("prefix", "/_synapse/admin", ["/_synapse/admin", "/_synapse/admin/*"]),
    ("prefix", "/_palpo/client", ["/_palpo/client", "/_palpo/client/*"]),
    ("prefix", "/.well-known/acme-challenge", ["/.well-known/acme-challenge", "/.well-known/acme-challenge/*"]),
    ("prefix", "/x/", ["/x/*"]),
    ("prefix", "/", ["/*"]),
    ("exact", "/health", ["/health"]),
    ("exact", "/.well-known/matrix/server", ["/.well-known/matrix/server"]),
])
def test_route_path_patterns(kind, path, patterns):
    assert route_path_patterns(match(kind, path)) == patterns
    assert path_plugin.relayd_path_patterns(match(kind, path)) == patterns


# Raw paths (what relayd matches: no query, no decoding) against the route's raw_regex:
# the patterns must agree with the regex on every one of them.
RAW_PATHS = [
    "/_matrix", "/_matrix/", "/_matrix/client/versions", "/_matrixx", "/_matrix%2Fclient", "//_matrix/x",
    "/_synapse/admin", "/_synapse/admin/v1/x", "/_synapse/administrator", "/_synapse/ADMIN/x", "/_SYNAPSE/admin",
    "/_synapse//admin/x", "/_synapse/%61dmin/x", "/_synapse/admin/v2/users/%2E%2E%2F%2E%2E%2Fhealth",
    "/health", "/health/", "/healthz", "/HEALTH", "/health/../_synapse/admin", "/health%2F..%2F_synapse/admin",
    "/.well-known/matrix/server", "/.well-known/matrix/server/", "/.well-known/matrix/serverx",
    "/.well-known/matrix/client", "/.well-known/matrix/%73erver",
    "/", "/x", "/x/", "/x/y", "/xy", "/X/", "/x%2Fy",
]


@pytest.mark.parametrize("kind, path", [("prefix", "/_matrix"), ("prefix", "/_synapse/admin"), ("exact", "/health"),
                                        ("exact", "/.well-known/matrix/server"), ("prefix", "/x/"), ("prefix", "/")])
def test_patterns_equal_the_raw_uri_rule(kind, path):
    import re
    patterns = route_path_patterns(match(kind, path))
    regex = re.compile(raw_regex(kind, path))
    for raw in RAW_PATHS:
        assert any(relayd_fnmatch(p, raw) for p in patterns) == bool(regex.match(raw)), raw


@pytest.mark.parametrize("bad, message", [
    (match("prefix", "/_matrix", raw_regex="^/_matrix"), "cannot express the raw-URI rule"),
    (match("exact", "/health", raw_regex="^/health$"), "cannot express the raw-URI rule"),
    ({"kind": "regex", "path": "/x"}, "kind must be prefix or exact"),
    ({"kind": "prefix", "path": "x"}, "starting with '/'"),
    ({"kind": "prefix", "path": "/a*b"}, "metacharacter"),
    ({"kind": "exact", "path": "/a[b]"}, "metacharacter"),
    ({"kind": "exact", "path": "/a\\b"}, "metacharacter"),
    ({"kind": "exact", "path": '/a"b'}, "cannot quote"),
    ({"kind": "exact", "path": "/a b"}, "cannot quote"),
    ("/x", "must be a dict"),
])
def test_route_path_patterns_refuse_what_relayd_cannot_express(bad, message):
    with pytest.raises(RelaydPatternError, match=message):
        route_path_patterns(bad)
    with pytest.raises(AnsibleFilterError, match="relayd_path_patterns: "):
        path_plugin.relayd_path_patterns(bad)


# --------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------

@pytest.mark.parametrize("paths, namespaces, encoded", [
    (["/_synapse/admin", "/_matrix", "/_synapse/client", "/health"], ["/_synapse/"],
     ["/%*", "/_%*", "/_s%*", "/_sy%*", "/_syn%*", "/_syna%*", "/_synap%*", "/_synaps%*", "/_synapse%*"]),
    (["/_palpo/admin", "/_matrix", "/_palpo/client"], ["/_palpo/"],
     ["/%*", "/_%*", "/_p%*", "/_pa%*", "/_pal%*", "/_palp%*", "/_palpo%*"]),
    (["/_matrix", "/health"], [], []),
    ([], [], []),
    (["/_a/x", "/_b/y", "/_a/z"], ["/_a/", "/_b/"], ["/%*", "/_%*", "/_a%*", "/_b%*"]),
])
def test_namespace_patterns(paths, namespaces, encoded):
    result = namespace_patterns(paths)
    assert result == {"namespaces": namespaces, "rest": [ns + "*" for ns in namespaces], "encoded": encoded}
    assert namespace_plugin.relayd_namespace_patterns(paths) == result


@pytest.mark.parametrize("spelling, refused", [
    ("/%5Fsynapse/admin/x", True), ("/_%73ynapse/admin/x", True), ("/_synaps%65/admin/x", True),
    ("/_synapse%2Fadmin/x", True), ("/%2F_synapse/admin", True), ("/_synapse/admin/x", False),
    ("/_matrix/client/versions", False), ("/_matrix/%2F", False),
])
def test_encoded_spellings_of_a_namespace(spelling, refused):
    patterns = namespace_patterns(["/_synapse/admin"])["encoded"]
    assert any(relayd_fnmatch(p, spelling) for p in patterns) == refused


@pytest.mark.parametrize("bad", ["/_synapse/admin", None, 5, ["/a*/b"]])
def test_namespace_patterns_refuse_bad_input(bad):
    with pytest.raises((RelaydPatternError, TypeError)):
        namespace_patterns(bad)
    with pytest.raises(AnsibleFilterError, match="relayd_namespace_patterns: "):
        namespace_plugin.relayd_namespace_patterns(bad)
