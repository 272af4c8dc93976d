"""The collection's Jinja tests return plain booleans and never raise."""

import importlib

import pytest

PLUGINS = ["server_name", "hostname", "https_base_url", "cidr", "proxy_url", "no_proxy_entry"]


def _test(name):
    module = importlib.import_module("ansible_collections.mxedge.matrix.plugins.test." + name)
    tests = module.TestModule().tests()
    assert list(tests) == [name]  # one test per file, named like the file
    return tests[name]


CASES = {
    "server_name": (
        [
            "example.com",
            "example.com:8448",
            "EXAMPLE.COM",
            "xn--bcher-kva.example",
            "1.2.3.4:1",
            "[::1]",
            "[2001:db8::1]:65535",
        ],
        [
            "",
            " example.com",
            "example.com:0",
            "example.com:65536",
            "example.com.",
            "2001:db8::1",
            "b\u00fccher.example",
            "https://example.com",
            "1.2.3.256",
        ],
    ),
    "hostname": (
        ["example.com", "Matrix.Example.com", "xn--bcher-kva.example", "1.2.3.4", "[::1]"],
        ["", "example.com:443", "[::1]:443", "::1", "example.com.", "exa mple.com"],
    ),
    "https_base_url": (
        [
            "https://matrix.example.com",
            "https://matrix.example.com/",
            "https://matrix.example.com:8443/matrix",
            "https://[2001:db8::1]:8448",
        ],
        [
            "",
            "http://matrix.example.com",
            "matrix.example.com",
            "https://matrix.example.com/?a",
            "https://matrix.example.com/#a",
            "https://u@matrix.example.com",
            "https://matrix.example.com:0",
            "https://matrix.example.com:65536",
        ],
    ),
    "cidr": (
        ["10.0.0.0/8", "192.0.2.7/32", "0.0.0.0/0", "::/0", "2001:db8::/32", "::1/128"],
        ["", "10.0.0.1/8", "10.0.0.0", "10.0.0.0/33", "::/129", "[::1]/128", "example.com/24"],
    ),
    "proxy_url": (
        [
            "http://proxy.example.com:3128",
            "https://proxy.example.com",
            "proxy.example.com:3128",
            "http://USERNAME:PASSWORD@10.0.1.1:8080/",
            "http://[2001:db8::1]:3128",
        ],
        ["", "socks5://p:1080", "http://p:3128/path", "http://p:0", "http://:pw@p"],
    ),
    "no_proxy_entry": (
        ["*", "localhost", ".example.com", "127.0.0.1", "::1", "[::1]", "10.0.0.0/8", "2001:db8::/32"],
        ["", "*.example.com", "example.com:443", "a,b", "10.0.0.1/8", " localhost"],
    ),
}

NOT_STRINGS = [None, 0, 443, 1.0, True, [], ["example.com"], {}, {"a": "b"}]


@pytest.mark.parametrize(
    "name,value", [(name, value) for name in PLUGINS for value in CASES[name][0]]
)
def test_match(name, value):
    assert _test(name)(value) is True


@pytest.mark.parametrize(
    "name,value",
    [(name, value) for name in PLUGINS for value in CASES[name][1]]
    + [(name, value) for name in PLUGINS for value in NOT_STRINGS],
)
def test_no_match(name, value):
    assert _test(name)(value) is False
