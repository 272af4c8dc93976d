"""Tables for plugins/module_utils/matrix_names.py: every rule, valid and invalid."""

import ipaddress
import json

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import matrix_names as mn
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import MatrixNameError

LONG_LABEL = "a" * 63
NAME_255 = ".".join([LONG_LABEL] * 4)[:255]  # 63+1+63+1+63+1+63 = 255

# --------------------------------------------------------------- server names

# (input, host, port)
VALID_SERVER_NAMES = [
    ("example.com", "example.com", None),
    ("matrix.org:8888", "matrix.org", 8888),
    ("EXAMPLE.Com", "EXAMPLE.Com", None),  # case kept, not normalised
    ("localhost", "localhost", None),
    ("hs1", "hs1", None),
    ("a", "a", None),
    ("1a.example", "1a.example", None),
    ("a-b.example", "a-b.example", None),
    ("123.example", "123.example", None),
    ("example.123a", "example.123a", None),
    ("xn--bcher-kva.example", "xn--bcher-kva.example", None),  # punycode IDN
    ("xn--80ak6aa92e.com:443", "xn--80ak6aa92e.com", 443),
    ("example.com:1", "example.com", 1),
    ("example.com:65535", "example.com", 65535),
    ("example.com:443", "example.com", 443),
    ("1.2.3.4", "1.2.3.4", None),
    ("1.2.3.4:1234", "1.2.3.4", 1234),
    ("0.0.0.0", "0.0.0.0", None),
    ("255.255.255.255:8448", "255.255.255.255", 8448),
    ("[1234:5678::abcd]", "[1234:5678::abcd]", None),
    ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", 5678),
    ("[::1]", "[::1]", None),
    ("[::1]:8448", "[::1]", 8448),
    ("[2001:DB8::1]", "[2001:DB8::1]", None),
    ("[::ffff:192.0.2.1]:443", "[::ffff:192.0.2.1]", 443),
    ("[2001:db8:0:0:0:0:0:1]", "[2001:db8:0:0:0:0:0:1]", None),
    (LONG_LABEL + ".example", LONG_LABEL + ".example", None),
    (NAME_255, NAME_255, None),
]

# (input, fragment of the error text)
INVALID_SERVER_NAMES = [
    ("", "must not be empty"),
    (" ", "whitespace"),
    ("exa mple.com", "whitespace"),
    (" example.com", "whitespace"),
    ("example.com ", "whitespace"),
    ("example.com\n", "whitespace"),
    ("example.com\t:443", "whitespace"),
    ("example\x00.com", "control characters"),
    ("b\u00fccher.example", "punycode"),
    ("\u0441\u0430\u0439\u0442.com", "punycode"),
    ("example.com.", "must not end with '.'"),
    ("example.com.:443", "must not end with '.'"),
    (".example.com", "empty DNS label"),
    ("a..example", "empty DNS label"),
    (".", "must not end with '.'"),
    ("under_score.example", "only letters, digits, '-' and '.'"),
    ("example.com/", "only letters, digits, '-' and '.'"),
    ("https://example.com", "must not include a URL scheme"),
    ("example.com:443/", "port must be"),
    ("user@example.com", "only letters, digits, '-' and '.'"),
    ("-example.com", "must not start or end with '-'"),
    ("example-.com", "must not start or end with '-'"),
    ("a" * 64 + ".example", "longer than 63"),
    (NAME_255 + "a", "at most 255"),
    ("example.com:", "port must be a decimal number"),
    ("example.com:0", "port must be a decimal number from 1 to 65535"),
    ("example.com:65536", "port must be a decimal number from 1 to 65535"),
    ("example.com:99999", "port must be a decimal number from 1 to 65535"),
    ("example.com:100000", "port must be a decimal number from 1 to 65535"),
    ("example.com:08448", "without sign or leading zeros"),
    ("example.com:+443", "without sign or leading zeros"),
    ("example.com:-1", "port must be"),
    ("example.com:44a", "port must be"),
    ("example.com:\u0664\u0664\u0663", "punycode"),  # Arabic-Indic digits: not ASCII
    ("example.com:443:443", "IPv6 literals must be enclosed"),
    ("1.2.3.256", "octets must be 0-255"),
    ("256.0.0.1:443", "octets must be 0-255"),
    ("01.2.3.4", "leading zeros"),
    ("1.2.3.04", "leading zeros"),
    ("1.2.3", "must not be all digits"),
    ("1.2.3.4.5", "must not be all digits"),
    ("1234", "must not be all digits"),
    ("::1", "IPv6 literals must be enclosed in square brackets"),
    ("2001:db8::1", "IPv6 literals must be enclosed in square brackets"),
    ("2001:db8::1:8448", "IPv6 literals must be enclosed in square brackets"),
    ("[::1", "enclosed in '[' and ']'"),
    ("::1]", "IPv6 literals must be enclosed"),
    ("[]", "IPv6 literal may contain only"),
    ("[]:443", "IPv6 literal may contain only"),
    ("[::1]443", "only ':port' may follow"),
    ("[::1]:", "port must be"),
    ("[::1]:0", "port must be"),
    ("[::1]:65536", "port must be"),
    ("[fe80::1%eth0]", "zone index"),
    ("[fe80::1%25eth0]:443", "zone index"),
    ("[::g]", "may contain only hex digits"),
    ("[1:2:3:4:5:6:7:8:9]", "not a valid IPv6 address"),
    ("[1.2.3.4]", "not a valid IPv6 address"),
    ("[example.com]", "may contain only hex digits"),
    ("ex[ample.com", "square brackets"),
    (":443", "host part must not be empty"),
]

NOT_STRINGS = [None, 1, 443, 1.5, True, ["example.com"], {"a": 1}, b"example.com"]


@pytest.mark.parametrize("value,host,port", VALID_SERVER_NAMES)
def test_split_server_name_valid(value, host, port):
    assert mn.split_server_name(value) == (host, port)
    assert mn.validate_server_name(value) == value
    assert mn.validate_server_name(value).__class__ is str


@pytest.mark.parametrize("value,fragment", INVALID_SERVER_NAMES)
def test_split_server_name_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.split_server_name(value)
    assert fragment in str(info.value)
    assert info.value.argument is None


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_server_name_not_a_string(value):
    with pytest.raises(MatrixNameError, match="must be a string"):
        mn.validate_server_name(value)


@pytest.mark.parametrize(
    "value,kind",
    [("example.com", "dns"), ("example.com:1", "dns"), ("1.2.3.4", "ipv4"), ("[::1]:2", "ipv6")],
)
def test_server_name_kind(value, kind):
    assert mn.server_name_kind(value) == kind


def test_str_subclass_comes_back_as_plain_str():
    class Tagged(str):
        pass

    assert mn.validate_server_name(Tagged("example.com")).__class__ is str
    assert mn.split_server_name(Tagged("example.com:1")) == ("example.com", 1)


# ------------------------------------------------------------------ host names

VALID_HOSTNAMES = [
    "example.com",
    "MATRIX.example.com",
    "xn--bcher-kva.example",
    "1.2.3.4",
    "[::1]",
    "[2001:db8::1]",
    "localhost",
]
INVALID_HOSTNAMES = [
    ("example.com:443", "must not include a port"),
    ("[::1]:443", "must not include a port"),
    ("1.2.3.4:1", "must not include a port"),
    ("::1", "square brackets"),
    ("example.com.", "must not end with '.'"),
    ("", "must not be empty"),
    (" example.com", "whitespace"),
    ("b\u00fccher.example", "punycode"),
]


@pytest.mark.parametrize("value", VALID_HOSTNAMES)
def test_hostname_valid(value):
    assert mn.validate_hostname(value) == value


@pytest.mark.parametrize("value,fragment", INVALID_HOSTNAMES)
def test_hostname_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.validate_hostname(value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", ["example.com", "xn--bcher-kva.example", "a"])
def test_dns_name_valid(value):
    assert mn.validate_dns_name(value) == value


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("1.2.3.4", "must be a DNS name, not an IP literal (why)"),
        ("[::1]", "must be a DNS name, not an IP literal (why)"),
        ("example.com:8448", "must not include a port (why)"),
        ("example.com.", "must not end with '.'"),
    ],
)
def test_dns_name_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.validate_dns_name(value, reason="why")
    assert fragment in str(info.value)


# ----------------------------------------------------------------------- ports

@pytest.mark.parametrize(
    "value,expected", [(1, 1), (443, 443), (65535, 65535), ("8448", 8448), ("1", 1)]
)
def test_port_valid(value, expected):
    assert mn.validate_port(value) == expected


@pytest.mark.parametrize(
    "value", [0, 65536, -1, "0", "65536", "08448", "", " 443", "443 ", "+443", "4.4", 4.0, True, False, None, [443]]
)
def test_port_invalid(value):
    with pytest.raises(MatrixNameError, match="port must be a whole number from 1 to 65535"):
        mn.validate_port(value)


# ------------------------------------------------------------------------ URLs

# (input, host, port, path)
VALID_URLS = [
    ("https://matrix.example.com", "matrix.example.com", None, ""),
    ("https://matrix.example.com/", "matrix.example.com", None, "/"),
    ("https://matrix.example.com:8443/", "matrix.example.com", 8443, "/"),
    ("https://matrix.example.com:443", "matrix.example.com", 443, ""),
    ("https://example.com/matrix", "example.com", None, "/matrix"),
    ("https://example.com/matrix/", "example.com", None, "/matrix/"),
    ("https://example.com/a%20b/~c;d=e@f:g", "example.com", None, "/a%20b/~c;d=e@f:g"),
    ("https://MATRIX.Example.com", "MATRIX.Example.com", None, ""),
    ("https://xn--bcher-kva.example/", "xn--bcher-kva.example", None, "/"),
    ("https://192.0.2.1:8448", "192.0.2.1", 8448, ""),
    ("https://[2001:db8::1]/", "[2001:db8::1]", None, "/"),
    ("https://[2001:db8::1]:8443/matrix", "[2001:db8::1]", 8443, "/matrix"),
    ("https://example.com:1", "example.com", 1, ""),
    ("https://example.com:65535", "example.com", 65535, ""),
]

INVALID_URLS = [
    ("", "must not be empty"),
    ("matrix.example.com", "absolute URL starting with 'https://'"),
    ("//matrix.example.com", "absolute URL starting with 'https://'"),
    ("https:matrix.example.com", "absolute URL starting with 'https://'"),
    ("http://matrix.example.com", "scheme 'https' (lowercase), not 'http'"),
    ("HTTPS://matrix.example.com", "not 'HTTPS'"),
    ("ftp://matrix.example.com", "not 'ftp'"),
    ("https://", "must name a host"),
    ("https:///path", "must name a host"),
    ("https://matrix.example.com?", "must not have a query"),
    ("https://matrix.example.com/?a=b", "must not have a query"),
    ("https://matrix.example.com/#", "must not have a fragment"),
    ("https://matrix.example.com#frag", "must not have a fragment"),
    ("https://user@matrix.example.com", "user information"),
    ("https://user:pw@matrix.example.com", "user information"),
    ("https://matrix.example.com:0/", "port must be"),
    ("https://matrix.example.com:65536/", "port must be"),
    ("https://matrix.example.com:/", "port must be"),
    ("https://matrix.example.com./", "must not end with '.'"),
    ("https://2001:db8::1/", "square brackets"),
    ("https://[fe80::1%25eth0]/", "zone index"),
    ("https://matrix example.com", "whitespace"),
    (" https://matrix.example.com", "whitespace"),
    ("https://matrix.example.com/ ", "whitespace"),
    ("https://b\u00fccher.example/", "punycode"),
    ("https://example.com/a%2", "RFC 3986 path characters"),
    ("https://example.com/a%zz", "RFC 3986 path characters"),
    ("https://example.com/<x>", "RFC 3986 path characters"),
    ("https://example.com/a\\b", "RFC 3986 path characters"),
    ("https://exa_mple.com/", "only letters, digits"),
]


@pytest.mark.parametrize("value,host,port,path", VALID_URLS)
def test_https_url_valid(value, host, port, path):
    assert mn.parse_https_url(value) == {"host": host, "port": port, "path": path}
    assert mn.validate_https_base_url(value) == value


@pytest.mark.parametrize("value,fragment", INVALID_URLS)
def test_https_url_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.parse_https_url(value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_https_url_not_a_string(value):
    with pytest.raises(MatrixNameError, match="must be a string"):
        mn.validate_https_base_url(value)


# --------------------------------------------------------------------- CIDR

VALID_CIDRS = [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("192.0.2.0/24", "192.0.2.0/24"),
    ("192.0.2.1/32", "192.0.2.1/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("::/0", "::/0"),
    ("::1/128", "::1/128"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("2001:DB8::/32", "2001:db8::/32"),
    ("fd00::/8", "fd00::/8"),
]
INVALID_CIDRS = [
    ("", "must not be empty"),
    ("10.0.0.0", "CIDR notation"),
    ("2001:db8::1", "CIDR notation"),
    ("10.0.0.1/8", "host bits set; the network is '10.0.0.0/8'"),
    ("2001:db8::1/32", "host bits set; the network is '2001:db8::/32'"),
    ("10.0.0.0/33", "prefix length must be 0-32"),
    ("::/129", "prefix length must be 0-128"),
    ("10.0.0.0/08", "leading zeros"),
    ("10.0.0.0/", "prefix length must be a decimal number"),
    ("10.0.0.0/-1", "prefix length must be a decimal number"),
    ("10.0.0.0/8/8", "prefix length must be a decimal number"),
    ("10.0.0.0/255.0.0.0", "prefix length must be a decimal number"),
    ("010.0.0.0/8", "leading zeros"),
    ("10.0.0.256/32", "octets must be 0-255"),
    ("10.0.0/24", "IPv4 or IPv6 address"),
    ("example.com/24", "IPv4 or IPv6 address"),
    ("[2001:db8::]/32", "IPv6 literal may contain only"),
    ("fe80::%eth0/64", "zone index"),
    (" 10.0.0.0/8", "whitespace"),
    ("10.0.0.0/8 ", "whitespace"),
]


@pytest.mark.parametrize("value,network", VALID_CIDRS)
def test_cidr_valid(value, network):
    parsed = mn.parse_cidr(value)
    assert parsed == ipaddress.ip_network(network)
    assert mn.validate_cidr(value) == value


@pytest.mark.parametrize("value,fragment", INVALID_CIDRS)
def test_cidr_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.parse_cidr(value)
    assert fragment in str(info.value)


# ----------------------------------------------------------------- proxy URLs

# (input, scheme, username, password, host, port)
VALID_PROXIES = [
    ("http://proxy.example.com:3128", "http", None, None, "proxy.example.com", 3128),
    ("https://proxy.example.com", "https", None, None, "proxy.example.com", None),
    ("proxy.example.com:3128", "http", None, None, "proxy.example.com", 3128),
    ("proxy.example.com", "http", None, None, "proxy.example.com", None),
    ("http://USERNAME:PASSWORD@10.0.1.1:8080/", "http", "USERNAME", "PASSWORD", "10.0.1.1", 8080),
    ("user:p%40ss@10.0.1.1:8080/", "http", "user", "p%40ss", "10.0.1.1", 8080),
    ("http://u:a:b@proxy", "http", "u", "a:b", "proxy", None),
    ("http://[2001:db8::1]:3128", "http", None, None, "[2001:db8::1]", 3128),
    ("http://u:p@[::1]", "http", "u", "p", "[::1]", None),
]
INVALID_PROXIES = [
    ("", "must not be empty"),
    ("socks5://proxy:1080", "scheme must be 'http' or 'https'"),
    ("HTTP://proxy:3128", "scheme must be 'http' or 'https'"),
    ("http://proxy:3128/path", "must not have a path"),
    ("http://proxy:3128//", "must not have a path"),
    ("http://proxy:3128/?a", "must not have a path"),
    ("http://proxy:3128#x", "must not have a path"),
    ("http://:pw@proxy", "user name before '@' must not be empty"),
    ("http://u:p w@proxy", "whitespace"),
    ("http://u:p@ss@proxy", "without percent-decoding"),
    ("http://u:p[x]@proxy", "without percent-decoding"),
    ("http://user@proxy:3128", "needs a password"),
    ("http://user:@proxy:3128", "needs a password"),
    ("http://", "must name a host"),
    ("http://u:p@", "must name a host"),
    ("http://proxy:0", "port must be"),
    ("http://proxy:65536", "port must be"),
    ("http://2001:db8::1:3128", "square brackets"),
    ("http://proxy.example.com.:3128", "must not end with '.'"),
]


@pytest.mark.parametrize("value,scheme,username,password,host,port", VALID_PROXIES)
def test_proxy_url_valid(value, scheme, username, password, host, port):
    assert mn.parse_proxy_url(value) == {
        "scheme": scheme,
        "username": username,
        "password": password,
        "host": host,
        "port": port,
    }
    assert mn.validate_proxy_url(value) == value


@pytest.mark.parametrize("value,fragment", INVALID_PROXIES)
def test_proxy_url_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.validate_proxy_url(value)
    assert fragment in str(info.value)


def test_proxy_url_error_hides_password():
    with pytest.raises(MatrixNameError) as info:
        mn.validate_proxy_url("socks5://alice:s3cret@proxy:1080")
    assert info.value.redacted
    error = info.value.for_argument("matrix_forward_proxy_http", "socks5://alice:s3cret@proxy:1080")
    assert "s3cret" not in str(error)
    assert str(error).startswith("argument 'matrix_forward_proxy_http' ('socks5://alice:***@proxy:1080'): ")


@pytest.mark.parametrize(
    "value,expected",
    [
        ("http://u:p@h:1", "http://u:***@h:1"),
        ("u:p@h", "u:***@h"),
        ("http://u@h", "http://u@h"),
        ("http://h:1", "http://h:1"),
        ("http://u:p@x@h", "http://u:***@h"),
    ],
)
def test_redact_proxy_url(value, expected):
    assert mn.redact_proxy_url(value) == expected


# --------------------------------------------------------------- no_proxy

VALID_NO_PROXY = [
    "*",
    "localhost",
    "example.com",
    ".example.com",
    "EXAMPLE.com",
    "xn--bcher-kva.example",
    "127.0.0.1",
    "::1",
    "[::1]",
    "2001:db8::1",
    "10.0.0.0/8",
    "2001:db8::/32",
]
INVALID_NO_PROXY = [
    ("", "must not be empty"),
    (" ", "whitespace"),
    ("a,b", "single entry"),
    ("*.example.com", "write '.example.com'"),
    ("**", "wildcards"),
    ("example.com:443", "must not include a port"),
    ("[::1]:443", "must not include a port"),
    ("..example.com", "empty DNS label"),
    ("example.com.", "must not end with '.'"),
    ("10.0.0.1/8", "host bits set"),
    ("1.2.3.256", "octets must be 0-255"),
    ("fe80::1%eth0", "zone index"),
    ("b\u00fccher.example", "punycode"),
    ("under_score", "only letters, digits"),
]


@pytest.mark.parametrize("value", VALID_NO_PROXY)
def test_no_proxy_valid(value):
    assert mn.validate_no_proxy_entry(value) == value


@pytest.mark.parametrize("value,fragment", INVALID_NO_PROXY)
def test_no_proxy_invalid(value, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.validate_no_proxy_entry(value)
    assert fragment in str(info.value)


# ------------------------------------------------------------ canonical JSON


@pytest.mark.parametrize(
    "data,text",
    [
        ({"b": 1, "a": [1, 2, {"d": None, "c": True}]}, '{"a":[1,2,{"c":true,"d":null}],"b":1}'),
        ({"k": "\u00fc\u2603"}, '{"k":"\\u00fc\\u2603"}'),
        ({"k": "a/b\"c\\"}, '{"k":"a/b\\"c\\\\"}'),
        ({"k": 1.5, "t": (1, 2)}, '{"k":1.5,"t":[1,2]}'),
        ({}, "{}"),
    ],
)
def test_canonical_json(data, text):
    assert mn.canonical_json(data) == text
    assert json.loads(text) == json.loads(json.dumps(data))


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"a": float("nan")}, "value['a'] must be a finite number"),
        ({"a": [float("inf")]}, "value['a'][0] must be a finite number"),
        ({1: "a"}, "keys must be strings"),
        ({"a": {1, 2}}, "value['a'] must be JSON data, not a set"),
        ({"a": b"x"}, "must be JSON data, not a bytes"),
    ],
)
def test_canonical_json_invalid(data, fragment):
    with pytest.raises(MatrixNameError) as info:
        mn.canonical_json(data)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- errors


def test_error_format():
    error = MatrixNameError("rule broken")
    assert str(error) == "rule broken"
    named = error.for_argument("server_target", "exa mple.com")
    assert str(named) == "argument 'server_target' ('exa mple.com'): rule broken"
    assert named.for_argument("other", "x") is named
    assert str(MatrixNameError("r").for_argument("a", "x", show_value=False)) == "argument 'a': r"
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    "value,shown",
    [
        ("x", "'x'"),
        (" x\t", "' x\\t'"),
        (1, "1"),
        (True, "True"),
        (None, "None"),
        ({"a": 1}, "<mapping>"),
        ([1], "<list>"),
        ("y" * 300, "'" + "y" * 115 + "...'"),
    ],
)
def test_show(value, shown):
    assert mn.show(value) == shown
