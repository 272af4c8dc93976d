"""Exact output bytes and error texts of the delegation filters."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.mxedge.matrix.plugins.filter import srv_records as srv_records_plugin
from ansible_collections.mxedge.matrix.plugins.filter import well_known_client as client_plugin
from ansible_collections.mxedge.matrix.plugins.filter import well_known_server as server_plugin

well_known_server = server_plugin.FilterModule().filters()["well_known_server"]
well_known_client = client_plugin.FilterModule().filters()["well_known_client"]
srv_records = srv_records_plugin.FilterModule().filters()["srv_records"]


def test_one_filter_per_file():
    assert list(server_plugin.FilterModule().filters()) == ["well_known_server"]
    assert list(client_plugin.FilterModule().filters()) == ["well_known_client"]
    assert list(srv_records_plugin.FilterModule().filters()) == ["srv_records"]


# ---------------------------------------------------------- well_known_server


@pytest.mark.parametrize(
    "target,body",
    [
        ("example.com", b'{"m.server":"example.com"}'),
        ("matrix.example.com:443", b'{"m.server":"matrix.example.com:443"}'),
        ("matrix.example.test:8448", b'{"m.server":"matrix.example.test:8448"}'),
        ("Matrix.Example.COM:1", b'{"m.server":"Matrix.Example.COM:1"}'),
        ("xn--bcher-kva.example:65535", b'{"m.server":"xn--bcher-kva.example:65535"}'),
        ("192.0.2.1:8448", b'{"m.server":"192.0.2.1:8448"}'),
        ("[2001:db8::1]", b'{"m.server":"[2001:db8::1]"}'),
        ("[2001:db8::1]:8448", b'{"m.server":"[2001:db8::1]:8448"}'),
    ],
)
def test_well_known_server_bytes(target, body):
    result = well_known_server(target)
    assert result.__class__ is str
    assert result.encode("utf-8") == body


@pytest.mark.parametrize(
    "target,message",
    [
        (
            "exa mple.com",
            "well_known_server: argument 'server_target' ('exa mple.com'): "
            "server name must not contain whitespace or control characters",
        ),
        (
            "exa_mple.com",
            "well_known_server: argument 'server_target' ('exa_mple.com'): server name may contain "
            "only letters, digits, '-' and '.' (Matrix spec, Server Name grammar)",
        ),
        (
            "example.com:0",
            "well_known_server: argument 'server_target' ('example.com:0'): server name: port must be "
            "a decimal number from 1 to 65535, without sign or leading zeros "
            "(Matrix spec, Server Name grammar)",
        ),
        (
            "example.com:65536",
            "well_known_server: argument 'server_target' ('example.com:65536'): server name: port "
            "must be a decimal number from 1 to 65535, without sign or leading zeros "
            "(Matrix spec, Server Name grammar)",
        ),
        (
            "2001:db8::1",
            "well_known_server: argument 'server_target' ('2001:db8::1'): server name: IPv6 literals "
            "must be enclosed in square brackets, e.g. '[2001:db8::1]:8448' "
            "(Matrix spec, Server Name grammar)",
        ),
        (
            "example.com.",
            "well_known_server: argument 'server_target' ('example.com.'): server name must not end "
            "with '.' (no trailing dot: 'example.com.' and 'example.com' are different server names)",
        ),
        ("", "well_known_server: argument 'server_target' (''): server name must not be empty"),
        (None, "well_known_server: argument 'server_target' (None): server name must be a string, not null"),
        (8448, "well_known_server: argument 'server_target' (8448): server name must be a string, not an integer"),
        (
            "b\u00fccher.example",
            "well_known_server: argument 'server_target' ('b\u00fccher.example'): server name must be "
            "ASCII; write internationalised domain names in punycode ('xn--...', e.g. "
            "'xn--bcher-kva.example' for 'b\u00fccher.example')",
        ),
        (
            "https://example.com",
            "well_known_server: argument 'server_target' ('https://example.com'): server name must "
            "not include a URL scheme ('...://'); give host[:port] only (Matrix spec, Server Name grammar)",
        ),
    ],
)
def test_well_known_server_errors(target, message):
    with pytest.raises(AnsibleFilterError) as info:
        well_known_server(target)
    assert info.value.message == message


# ---------------------------------------------------------- well_known_client


@pytest.mark.parametrize(
    "args,kwargs,body",
    [
        (
            ("https://matrix.example.com",),
            {},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com"}}',
        ),
        (
            ("https://matrix.example.test/",),
            {"identity_server": None, "extra": {}},
            b'{"m.homeserver":{"base_url":"https://matrix.example.test/"}}',
        ),
        (
            ("https://matrix.example.test:8443/",),
            {"identity_server": ""},
            b'{"m.homeserver":{"base_url":"https://matrix.example.test:8443/"}}',
        ),
        (
            ("https://example.com/matrix/", "https://vector.im"),
            {},
            b'{"m.homeserver":{"base_url":"https://example.com/matrix/"},'
            b'"m.identity_server":{"base_url":"https://vector.im"}}',
        ),
        (
            ("https://[2001:db8::1]:8448",),
            {},
            b'{"m.homeserver":{"base_url":"https://[2001:db8::1]:8448"}}',
        ),
        (
            ("https://matrix.example.com/",),
            {
                "identity_server": "https://id.example.com/",
                "extra": {
                    "org.matrix.msc4143.rtc_foci": [
                        {"type": "livekit", "livekit_service_url": "https://rtc.example.com"}
                    ],
                    "org.matrix.msc3575.proxy": {"url": "https://sync.example.com"},
                    "m.homeserver": {"server_name": "example.com"},
                    "m.identity_server": {"note": "ok"},
                    "z": [1, 2.5, True, False, None, "caf\u00e9"],
                },
            },
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/","server_name":"example.com"},'
            b'"m.identity_server":{"base_url":"https://id.example.com/","note":"ok"},'
            b'"org.matrix.msc3575.proxy":{"url":"https://sync.example.com"},'
            b'"org.matrix.msc4143.rtc_foci":[{"livekit_service_url":"https://rtc.example.com","type":"livekit"}],'
            b'"z":[1,2.5,true,false,null,"caf\\u00e9"]}',
        ),
        (
            ("https://matrix.example.com",),
            {"extra": {"m.identity_server": {"base_url": "https://id.example.com"}}},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com"},'
            b'"m.identity_server":{"base_url":"https://id.example.com"}}',
        ),
        # MSC2965 delegated authentication (MAS) and MSC4143 RTC foci from named arguments.
        (
            ("https://matrix.example.com/",),
            {"auth_issuer": "https://auth.example.com/"},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"},'
            b'"org.matrix.msc2965.authentication":{"issuer":"https://auth.example.com/"}}',
        ),
        (
            ("https://matrix.example.com/",),
            {"auth_issuer": "https://auth.example.com/", "auth_account": "https://auth.example.com/account"},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"},'
            b'"org.matrix.msc2965.authentication":{"account":"https://auth.example.com/account",'
            b'"issuer":"https://auth.example.com/"}}',
        ),
        (
            ("https://matrix.example.com/",),
            {"auth_issuer": "", "auth_account": "", "rtc_foci": []},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"}}',
        ),
        (
            ("https://matrix.example.com/",),
            {"auth_issuer": None, "auth_account": None, "rtc_foci": None},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"}}',
        ),
        (
            ("https://matrix.example.com/",),
            {"rtc_foci": ["https://rtc.example.com/livekit/jwt"]},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"},'
            b'"org.matrix.msc4143.rtc_foci":[{"livekit_service_url":"https://rtc.example.com/livekit/jwt",'
            b'"type":"livekit"}]}',
        ),
        (
            ("https://matrix.example.com/",),
            {
                "rtc_foci": [
                    {"type": "livekit", "livekit_service_url": "https://a.example.com", "note": "eu"},
                    "https://b.example.com",
                    {"type": "org.example.sfu", "url": "wss://sfu.example.com"},
                ],
                "extra": {"org.matrix.msc2965.authentication": {"ignored": False}},
            },
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"},'
            b'"org.matrix.msc2965.authentication":{"ignored":false},'
            b'"org.matrix.msc4143.rtc_foci":[{"livekit_service_url":"https://a.example.com","note":"eu","type":"livekit"},'
            b'{"livekit_service_url":"https://b.example.com","type":"livekit"},'
            b'{"type":"org.example.sfu","url":"wss://sfu.example.com"}]}',
        ),
        (
            ("https://matrix.example.com/",),
            {"auth_issuer": "https://auth.example.com/", "extra": {"org.matrix.msc2965.authentication": {"x": 1}}},
            b'{"m.homeserver":{"base_url":"https://matrix.example.com/"},'
            b'"org.matrix.msc2965.authentication":{"issuer":"https://auth.example.com/","x":1}}',
        ),
    ],
)
def test_well_known_client_bytes(args, kwargs, body):
    result = well_known_client(*args, **kwargs)
    assert result.__class__ is str
    assert result.encode("utf-8") == body


def test_well_known_client_does_not_change_extra():
    extra = {"m.homeserver": {"x": 1}}
    well_known_client("https://a.example", extra=extra)
    assert extra == {"m.homeserver": {"x": 1}}


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (
            ("http://matrix.example.com",),
            {},
            "well_known_client: argument 'base_url' ('http://matrix.example.com'): homeserver base URL "
            "must use the scheme 'https' (lowercase), not 'http'",
        ),
        (
            ("matrix.example.com",),
            {},
            "well_known_client: argument 'base_url' ('matrix.example.com'): homeserver base URL must be "
            "an absolute URL starting with 'https://'",
        ),
        (
            ("https://matrix.example.com/?x=1",),
            {},
            "well_known_client: argument 'base_url' ('https://matrix.example.com/?x=1'): homeserver base "
            "URL must not have a query ('?...')",
        ),
        (
            ("https://matrix.example.com/#top",),
            {},
            "well_known_client: argument 'base_url' ('https://matrix.example.com/#top'): homeserver base "
            "URL must not have a fragment ('#...')",
        ),
        (
            ("https://matrix.example.com:65536",),
            {},
            "well_known_client: argument 'base_url' ('https://matrix.example.com:65536'): homeserver base "
            "URL: port must be a decimal number from 1 to 65535, without sign or leading zeros "
            "(Matrix spec, Server Name grammar)",
        ),
        (
            ("https://a.example", "http://id.example"),
            {},
            "well_known_client: argument 'identity_server' ('http://id.example'): identity server base "
            "URL must use the scheme 'https' (lowercase), not 'http'",
        ),
        (
            ("https://a.example",),
            {"extra": ["x"]},
            "well_known_client: argument 'extra' (<list>): extra must be a mapping (dict), not a list",
        ),
        (
            ("https://a.example",),
            {"extra": "x"},
            "well_known_client: argument 'extra' ('x'): extra must be a mapping (dict), not a string",
        ),
        (
            ("https://a.example",),
            {"extra": {"m.homeserver": {"base_url": "https://b.example"}}},
            "well_known_client: argument 'extra' (<mapping>): extra['m.homeserver']['base_url'] would "
            "override a value set from the argument base_url; set it there, not in extra",
        ),
        (
            ("https://a.example",),
            {"extra": {"m.homeserver": "https://b.example"}},
            "well_known_client: argument 'extra' (<mapping>): extra['m.homeserver'] would override a "
            "value set from the argument base_url; set it there, not in extra",
        ),
        (
            ("https://a.example", "https://id.example"),
            {"extra": {"m.identity_server": {"base_url": "https://other.example"}}},
            "well_known_client: argument 'extra' (<mapping>): extra['m.identity_server']['base_url'] "
            "would override a value set from the argument identity_server; set it there, not in extra",
        ),
        (
            ("https://a.example",),
            {"extra": {"x": float("nan")}},
            "well_known_client: argument 'extra' (<mapping>): extra['x'] must be a finite number "
            "(JSON has no NaN or Infinity)",
        ),
        (
            ("https://a.example",),
            {"extra": {"x": {1: 2}}},
            "well_known_client: argument 'extra' (<mapping>): extra['x']: keys must be strings "
            "(JSON objects), not an integer",
        ),
        (
            ("https://a.example",),
            {"auth_issuer": "http://auth.example"},
            "well_known_client: argument 'auth_issuer' ('http://auth.example'): authentication issuer URL "
            "must use the scheme 'https' (lowercase), not 'http'",
        ),
        (
            ("https://a.example",),
            {"auth_account": "https://auth.example/account"},
            "well_known_client: argument 'auth_account' ('https://auth.example/account'): auth_account "
            "needs auth_issuer (the account management URL belongs to an issuer)",
        ),
        (
            ("https://a.example",),
            {"auth_issuer": "https://auth.example/", "auth_account": "https://auth.example/account?x"},
            "well_known_client: argument 'auth_account' ('https://auth.example/account?x'): account "
            "management URL must not have a query ('?...')",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": "https://rtc.example"},
            "well_known_client: argument 'rtc_foci' ('https://rtc.example'): rtc_foci must be a list, "
            "not a string",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": ["rtc.example"]},
            "well_known_client: argument 'rtc_foci' (<list>): rtc_foci[0] must be an absolute URL "
            "starting with 'https://'",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": [{"livekit_service_url": "https://rtc.example"}]},
            "well_known_client: argument 'rtc_foci' (<list>): rtc_foci[0] must have a 'type' (a non-empty "
            "string, for example 'livekit')",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": ["https://rtc.example", {"type": "livekit"}]},
            "well_known_client: argument 'rtc_foci' (<list>): rtc_foci[1] of type 'livekit' must have "
            "'livekit_service_url'",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": [{"type": "livekit", "livekit_service_url": "http://rtc.example"}]},
            "well_known_client: argument 'rtc_foci' (<list>): rtc_foci[0]['livekit_service_url'] must use "
            "the scheme 'https' (lowercase), not 'http'",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": [42]},
            "well_known_client: argument 'rtc_foci' (<list>): rtc_foci[0] must be a LiveKit JWT service URL "
            "(string) or a mapping with 'type', not an integer",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": ["https://rtc.example", {"type": "livekit", "livekit_service_url": "https://rtc.example"}]},
            "well_known_client: argument 'rtc_foci' (<list>): rtc_foci[1] repeats rtc_foci[0]; list each "
            "focus once",
        ),
        (
            ("https://a.example",),
            {"rtc_foci": ["https://rtc.example"], "extra": {"org.matrix.msc4143.rtc_foci": []}},
            "well_known_client: argument 'extra' (<mapping>): extra['org.matrix.msc4143.rtc_foci'] would "
            "override a value set from the argument rtc_foci; set it there, not in extra",
        ),
        (
            ("https://a.example",),
            {"auth_issuer": "https://auth.example/",
             "extra": {"org.matrix.msc2965.authentication": {"issuer": "https://other.example/"}}},
            "well_known_client: argument 'extra' (<mapping>): extra['org.matrix.msc2965.authentication']"
            "['issuer'] would override a value set from the argument auth_issuer; set it there, not in extra",
        ),
    ],
)
def test_well_known_client_errors(args, kwargs, message):
    with pytest.raises(AnsibleFilterError) as info:
        well_known_client(*args, **kwargs)
    assert info.value.message == message


# ----------------------------------------------------------------- srv_records


@pytest.mark.parametrize(
    "args,kwargs,lines",
    [
        (
            ("example.com", "matrix.example.com", 8448),
            {},
            ["_matrix-fed._tcp.example.com. 3600 IN SRV 10 5 8448 matrix.example.com."],
        ),
        (
            ("example.com", "matrix.example.com", "443"),
            {"ttl": 300, "priority": 0, "weight": 0},
            ["_matrix-fed._tcp.example.com. 300 IN SRV 0 0 443 matrix.example.com."],
        ),
        (
            ("Example.COM", "xn--bcher-kva.example", 1),
            {"ttl": 0, "priority": 65535, "weight": 65535, "legacy": True},
            [
                "_matrix-fed._tcp.Example.COM. 0 IN SRV 65535 65535 1 xn--bcher-kva.example.",
                "_matrix._tcp.Example.COM. 0 IN SRV 65535 65535 1 xn--bcher-kva.example.",
            ],
        ),
        (
            ("example.test", "matrix.example.test", 65535),
            {"ttl": 2147483647, "legacy": False},
            ["_matrix-fed._tcp.example.test. 2147483647 IN SRV 10 5 65535 matrix.example.test."],
        ),
    ],
)
def test_srv_records_lines(args, kwargs, lines):
    assert srv_records(*args, **kwargs) == lines


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (
            ("example.com:8448", "matrix.example.com", 8448),
            {},
            "srv_records: argument 'server_name' ('example.com:8448'): server name must not include a "
            "port (SRV records are looked up only for server names that are DNS names without a port; "
            "Matrix spec, Resolving server names)",
        ),
        (
            ("192.0.2.1", "matrix.example.com", 8448),
            {},
            "srv_records: argument 'server_name' ('192.0.2.1'): server name must be a DNS name, not an "
            "IP literal (SRV records are looked up only for server names that are DNS names without a "
            "port; Matrix spec, Resolving server names)",
        ),
        (
            ("[2001:db8::1]", "matrix.example.com", 8448),
            {},
            "srv_records: argument 'server_name' ('[2001:db8::1]'): server name must be a DNS name, not "
            "an IP literal (SRV records are looked up only for server names that are DNS names without "
            "a port; Matrix spec, Resolving server names)",
        ),
        (
            ("example.com.", "matrix.example.com", 8448),
            {},
            "srv_records: argument 'server_name' ('example.com.'): server name must not end with '.' "
            "(no trailing dot: 'example.com.' and 'example.com' are different server names)",
        ),
        (
            ("example.com", "matrix.example.com.", 8448),
            {},
            "srv_records: argument 'target' ('matrix.example.com.'): SRV target must not end with '.' "
            "(no trailing dot: 'example.com.' and 'example.com' are different server names)",
        ),
        (
            ("example.com", "matrix.example.com:8448", 8448),
            {},
            "srv_records: argument 'target' ('matrix.example.com:8448'): SRV target must not include a "
            "port (an SRV target is a host name and the port goes in the 'port' argument; RFC 2782)",
        ),
        (
            ("example.com", "192.0.2.1", 8448),
            {},
            "srv_records: argument 'target' ('192.0.2.1'): SRV target must be a DNS name, not an IP "
            "literal (an SRV target is a host name and the port goes in the 'port' argument; RFC 2782)",
        ),
        (
            ("example.com", "matrix.example.com", 0),
            {},
            "srv_records: argument 'port' (0): port must be a whole number from 1 to 65535",
        ),
        (
            ("example.com", "matrix.example.com", 65536),
            {},
            "srv_records: argument 'port' (65536): port must be a whole number from 1 to 65535",
        ),
        (
            ("example.com", "matrix.example.com", "8448 "),
            {},
            "srv_records: argument 'port' ('8448 '): port must be a whole number from 1 to 65535",
        ),
        (
            ("example.com", "matrix.example.com", 8448),
            {"ttl": -1},
            "srv_records: argument 'ttl' (-1): ttl must be a whole number from 0 to 2147483647",
        ),
        (
            ("example.com", "matrix.example.com", 8448),
            {"ttl": 2147483648},
            "srv_records: argument 'ttl' (2147483648): ttl must be a whole number from 0 to 2147483647",
        ),
        (
            ("example.com", "matrix.example.com", 8448),
            {"priority": 65536},
            "srv_records: argument 'priority' (65536): priority must be a whole number from 0 to 65535",
        ),
        (
            ("example.com", "matrix.example.com", 8448),
            {"weight": -1},
            "srv_records: argument 'weight' (-1): weight must be a whole number from 0 to 65535",
        ),
        (
            ("example.com", "matrix.example.com", 8448),
            {"legacy": "yes"},
            "srv_records: argument 'legacy' ('yes'): legacy must be a boolean, not a string",
        ),
        (
            ("", "matrix.example.com", 8448),
            {},
            "srv_records: argument 'server_name' (''): server name must not be empty",
        ),
    ],
)
def test_srv_records_errors(args, kwargs, message):
    with pytest.raises(AnsibleFilterError) as info:
        srv_records(*args, **kwargs)
    assert info.value.message == message
