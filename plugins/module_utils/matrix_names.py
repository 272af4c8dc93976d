# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Matrix server names, URLs and delegation records: parse, validate, serialise.

One implementation of the rules, shared by the collection's filters
(``well_known_server``, ``well_known_client``, ``srv_records``), its tests
(``server_name``, ``hostname``, ``https_base_url``, ``cidr``, ``proxy_url``,
``no_proxy_entry``), the ``matrix`` role's preflight and later modules.
Standard library only; runs on Python 3.8+ (controller and target).

Rules (the Matrix specification, appendix "Server Name", plus the conventional
host name restrictions it asks for):

* a server name is ``host[:port]``; ``host`` is a DNS name, a dotted-quad IPv4
  literal or a bracketed IPv6 literal; ``port`` is 1-65535;
* a DNS name is at most 255 characters of letters, digits, ``-`` and ``.``,
  in labels of 1-63 characters that neither start nor end with ``-``; no empty
  label, so no leading, doubled or trailing dot (``example.com.`` and
  ``example.com`` would be two different server names); its last label is not
  all digits (that reads as a broken IPv4 literal);
* internationalised names must be written in punycode (``xn--...``);
* IPv4 octets are 0-255 without leading zeros; IPv6 literals are RFC 4291 text
  without a zone index; ports are decimal without sign or leading zeros;
* letters keep the case they were given: nothing is normalised, because Matrix
  compares server names as strings.

Every check raises :class:`MatrixNameError` (a ``ValueError``) whose text is
the rule broken; callers add the argument name and value with
:meth:`MatrixNameError.for_argument`.
"""

import ipaddress
import json
import math
import re
from collections.abc import Mapping

SPEC_SERVER_NAME = "Matrix spec, Server Name grammar"
SPEC_WELL_KNOWN = "Matrix spec, well-known URIs"
SPEC_SRV = "Matrix spec, Resolving server names"

_DNS_CHARS = re.compile(r"[A-Za-z0-9.-]+")
_DNS_LABEL_MAX = 63
_DNS_NAME_MAX = 255
_IPV4_SHAPE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV4_OCTET = re.compile(r"0|[1-9][0-9]{0,2}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_PORT_TEXT = re.compile(r"[1-9][0-9]{0,4}")
_PREFIX_TEXT = re.compile(r"0|[1-9][0-9]{0,2}")
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)"
    r"(?P<path>[^?#]*)(?P<query>\?[^#]*)?(?P<fragment>#.*)?",
    re.DOTALL,
)
# RFC 3986 pchar plus '/': unreserved, sub-delims, ':', '@', '%XX'.
_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
# RFC 3986 userinfo: unreserved, sub-delims, ':', '%XX'.
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")

_TTL_MAX = 2147483647  # RFC 2181, section 8
_U16_MAX = 65535


class MatrixNameError(ValueError):
    """A value broke one of the rules above.

    ``rule`` is the sentence naming the rule; ``argument`` and ``value`` are
    filled in by :meth:`for_argument` so that ``str(error)`` reads
    ``argument 'base_url' ('http://x'): <rule>``. An error raised with
    ``redacted=True`` carries a value safe to show (a proxy URL without its
    password) and keeps it whatever value :meth:`for_argument` is given.
    """

    def __init__(self, rule, argument=None, value=None, show_value=True, redacted=False):
        super().__init__(rule)
        self.rule = rule
        self.argument = argument
        self.value = value
        self.show_value = show_value
        self.redacted = redacted

    def for_argument(self, argument, value, show_value=None):
        """Return a copy naming ``argument`` (keeps an argument already named)."""
        if self.argument is not None:
            return self
        if show_value is None:
            show_value = self.show_value
        if self.redacted:
            value = self.value
        return MatrixNameError(self.rule, argument, value, show_value, self.redacted)

    def __str__(self):
        if self.argument is None:
            return self.rule
        if not self.show_value:
            return "argument '%s': %s" % (self.argument, self.rule)
        return "argument '%s' (%s): %s" % (self.argument, show(self.value), self.rule)


def show(value, limit=120):
    """Short, unambiguous text for a value in an error message."""
    if isinstance(value, str):
        text = repr(str.__str__(value))
    elif isinstance(value, bool) or value is None:
        text = repr(value)
    elif isinstance(value, (int, float)):
        text = repr(int(value) if isinstance(value, int) else float(value))
    elif isinstance(value, Mapping):
        text = "<mapping>"
    elif isinstance(value, (list, tuple)):
        text = "<list>"
    else:
        text = "<%s>" % type(value).__name__
    if len(text) > limit:
        text = text[: limit - 4] + "...'"
    return text


def _text(value, what):
    """Common checks for every textual input; returns a plain ``str``."""
    if not isinstance(value, str):
        raise MatrixNameError("%s must be a string, not %s" % (what, _type_name(value)))
    text = str.__str__(value)
    if not text:
        raise MatrixNameError("%s must not be empty" % what)
    for char in text:
        if char.isspace() or ord(char) < 32 or ord(char) == 127:
            raise MatrixNameError("%s must not contain whitespace or control characters" % what)
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        raise MatrixNameError(
            "%s must be ASCII; write internationalised domain names in punycode "
            "('xn--...', e.g. 'xn--bcher-kva.example' for 'b\u00fccher.example')" % what
        )
    return text


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a %s" % type(value).__name__


# ---------------------------------------------------------------- host names


def _check_ipv4(text, what):
    for octet in text.split("."):
        if not _IPV4_OCTET.fullmatch(octet):
            raise MatrixNameError(
                "%s: IPv4 literal octets must not have leading zeros (%s)" % (what, SPEC_SERVER_NAME)
            )
        if int(octet) > 255:
            raise MatrixNameError(
                "%s: IPv4 literal octets must be 0-255 (%s)" % (what, SPEC_SERVER_NAME)
            )


def _check_ipv6(text, what):
    """``text`` is the address without brackets."""
    if "%" in text:
        raise MatrixNameError(
            "%s: IPv6 literal must not carry a zone index ('%%...') (%s)" % (what, SPEC_SERVER_NAME)
        )
    if not _IPV6_CHARS.fullmatch(text):
        raise MatrixNameError(
            "%s: IPv6 literal may contain only hex digits, ':' and '.' (2-45 characters) (%s)"
            % (what, SPEC_SERVER_NAME)
        )
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise MatrixNameError(
            "%s: '%s' is not a valid IPv6 address (RFC 4291 text form) (%s)"
            % (what, text, SPEC_SERVER_NAME)
        )


def _check_dns_name(text, what):
    if not _DNS_CHARS.fullmatch(text):
        raise MatrixNameError(
            "%s may contain only letters, digits, '-' and '.' (%s)" % (what, SPEC_SERVER_NAME)
        )
    if len(text) > _DNS_NAME_MAX:
        raise MatrixNameError(
            "%s must be at most %d characters (%s)" % (what, _DNS_NAME_MAX, SPEC_SERVER_NAME)
        )
    if text.endswith("."):
        raise MatrixNameError(
            "%s must not end with '.' (no trailing dot: 'example.com.' and 'example.com' "
            "are different server names)" % what
        )
    labels = text.split(".")
    for label in labels:
        if not label:
            raise MatrixNameError(
                "%s must not start with '.' or contain '..' (empty DNS label)" % what
            )
        if len(label) > _DNS_LABEL_MAX:
            raise MatrixNameError(
                "%s: DNS label '%s...' is longer than %d characters (RFC 1035)"
                % (what, label[:20], _DNS_LABEL_MAX)
            )
        if label.startswith("-") or label.endswith("-"):
            raise MatrixNameError(
                "%s: DNS label '%s' must not start or end with '-' (RFC 1123 host name)"
                % (what, label)
            )
    if labels[-1].isdigit():
        raise MatrixNameError(
            "%s: the last DNS label must not be all digits (it reads as a malformed "
            "IPv4 literal; IPv4 literals are four decimal numbers 0-255) (%s)"
            % (what, SPEC_SERVER_NAME)
        )


def _classify_host(text, what):
    """Validate a host (no port) already known to be clean ASCII text.

    Returns ``'dns'``, ``'ipv4'`` or ``'ipv6'`` (``text`` in brackets).
    """
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 2:
            raise MatrixNameError(
                "%s: IPv6 literal must be enclosed in '[' and ']' (%s)" % (what, SPEC_SERVER_NAME)
            )
        _check_ipv6(text[1:-1], what)
        return "ipv6"
    if "[" in text or "]" in text:
        raise MatrixNameError(
            "%s: square brackets are only allowed around a whole IPv6 literal (%s)"
            % (what, SPEC_SERVER_NAME)
        )
    if ":" in text:
        raise MatrixNameError(
            "%s: IPv6 literals must be enclosed in square brackets, e.g. '[2001:db8::1]' (%s)"
            % (what, SPEC_SERVER_NAME)
        )
    if _IPV4_SHAPE.fullmatch(text):
        _check_ipv4(text, what)
        return "ipv4"
    _check_dns_name(text, what)
    return "dns"


def _port_from_text(text, what):
    if not _PORT_TEXT.fullmatch(text) or int(text) > _U16_MAX:
        raise MatrixNameError(
            "%s: port must be a decimal number from 1 to 65535, without sign or leading "
            "zeros (%s)" % (what, SPEC_SERVER_NAME)
        )
    return int(text)


def _split_host_port(text, what):
    """Split ``host[:port]``; the host is validated, the port returned as int or None."""
    if "://" in text:
        raise MatrixNameError(
            "%s must not include a URL scheme ('...://'); give host[:port] only (%s)"
            % (what, SPEC_SERVER_NAME)
        )
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise MatrixNameError(
                "%s: IPv6 literal must be enclosed in '[' and ']' (%s)" % (what, SPEC_SERVER_NAME)
            )
        host, rest = text[: end + 1], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise MatrixNameError(
                "%s: only ':port' may follow a bracketed IPv6 literal (%s)" % (what, SPEC_SERVER_NAME)
            )
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise MatrixNameError(
                "%s: IPv6 literals must be enclosed in square brackets, e.g. "
                "'[2001:db8::1]:8448' (%s)" % (what, SPEC_SERVER_NAME)
            )
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
    if not host:
        raise MatrixNameError("%s: host part must not be empty (%s)" % (what, SPEC_SERVER_NAME))
    kind = _classify_host(host, what)
    port = None if port_text is None else _port_from_text(port_text, what)
    return host, port, kind


def split_server_name(value):
    """Parse a Matrix server name ``host[:port]``.

    Returns ``(host, port)``: ``host`` exactly as given (IPv6 with brackets),
    ``port`` an int or ``None``. Raises :class:`MatrixNameError`.
    """
    host, port, _kind = _split_host_port(_text(value, "server name"), "server name")
    return host, port


def server_name_kind(value):
    """``'dns'``, ``'ipv4'`` or ``'ipv6'`` for a valid server name (port allowed)."""
    return _split_host_port(_text(value, "server name"), "server name")[2]


def validate_server_name(value):
    """Return ``value`` (as ``str``) if it is a valid Matrix server name, else raise."""
    split_server_name(value)
    return str.__str__(value)


def validate_hostname(value, what="host name"):
    """Return ``value`` if it is a DNS name, IPv4 literal or bracketed IPv6 literal without port."""
    text = _text(value, what)
    host, port, _kind = _split_host_port(text, what)
    if port is not None or host != text:
        raise MatrixNameError("%s must not include a port" % what)
    return text


def validate_dns_name(value, what="DNS name", reason=None):
    """Return ``value`` if it is a DNS name (no port, no IP literal), else raise.

    ``reason`` is appended to the "not an IP literal / no port" messages.
    """
    text = _text(value, what)
    suffix = " (%s)" % reason if reason else ""
    host, port, kind = _split_host_port(text, what)
    if port is not None or host != text:
        raise MatrixNameError("%s must not include a port%s" % (what, suffix))
    if kind != "dns":
        raise MatrixNameError("%s must be a DNS name, not an IP literal%s" % (what, suffix))
    return text


def validate_port(value, what="port"):
    """Return ``value`` as int if it is an integer (or decimal text) from 1 to 65535."""
    return _int_in_range(value, 1, _U16_MAX, what)


def _int_in_range(value, low, high, what):
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = int(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    else:
        number = None
    if number is None or not low <= number <= high:
        raise MatrixNameError(
            "%s must be a whole number from %d to %d" % (what, low, high)
        )
    return number


# --------------------------------------------------------------------- URLs


def parse_https_url(value, what="base URL"):
    """Parse an absolute ``https`` URL without user info, query or fragment.

    Returns a dict with ``host`` (as given; IPv6 in brackets), ``port`` (int or
    None) and ``path`` (possibly empty). The path, when present, must consist of
    RFC 3986 path characters and ``%XX`` escapes.
    """
    text = _text(value, what)
    match = _URL.fullmatch(text)
    if match is None:
        raise MatrixNameError("%s must be an absolute URL starting with 'https://'" % what)
    if match.group("scheme") != "https":
        raise MatrixNameError(
            "%s must use the scheme 'https' (lowercase), not '%s'" % (what, match.group("scheme"))
        )
    if match.group("query") is not None:
        raise MatrixNameError("%s must not have a query ('?...')" % what)
    if match.group("fragment") is not None:
        raise MatrixNameError("%s must not have a fragment ('#...')" % what)
    authority = match.group("authority")
    if "@" in authority:
        raise MatrixNameError("%s must not contain user information ('user@')" % what)
    if not authority:
        raise MatrixNameError("%s must name a host after 'https://'" % what)
    host, port, _kind = _split_host_port(authority, what)
    path = match.group("path")
    if not _PATH.fullmatch(path):
        raise MatrixNameError(
            "%s: path may contain only RFC 3986 path characters and %%XX escapes" % what
        )
    return {"host": host, "port": port, "path": path}


def validate_https_base_url(value, what="base URL"):
    """Return ``value`` if :func:`parse_https_url` accepts it, else raise."""
    parse_https_url(value, what)
    return str.__str__(value)


# ------------------------------------------------------------------ networks


def parse_cidr(value, what="network"):
    """Parse an IPv4 or IPv6 network in CIDR notation (``address/prefix``).

    The prefix length is required and host bits must be zero
    (``192.0.2.0/24``, not ``192.0.2.1/24``). Returns an
    ``ipaddress.IPv4Network`` or ``ipaddress.IPv6Network``.
    """
    text = _text(value, what)
    address, sep, prefix = text.partition("/")
    if not sep:
        raise MatrixNameError(
            "%s must be in CIDR notation 'address/prefix', e.g. '192.0.2.0/24' or "
            "'2001:db8::/32' (use /32 or /128 for a single address)" % what
        )
    if not _PREFIX_TEXT.fullmatch(prefix):
        raise MatrixNameError(
            "%s: prefix length must be a decimal number without sign or leading zeros" % what
        )
    if ":" in address:
        _check_ipv6(address, what)
        limit = 128
    elif _IPV4_SHAPE.fullmatch(address):
        _check_ipv4(address, what)
        limit = 32
    else:
        raise MatrixNameError(
            "%s: address must be an IPv4 or IPv6 address (no brackets, no host name)" % what
        )
    if int(prefix) > limit:
        raise MatrixNameError("%s: prefix length must be 0-%d" % (what, limit))
    network = ipaddress.ip_network(text, strict=False)
    if network.network_address != ipaddress.ip_address(address):
        raise MatrixNameError(
            "%s has host bits set; the network is '%s'" % (what, network.with_prefixlen)
        )
    return network


def validate_cidr(value, what="network"):
    """Return ``value`` if :func:`parse_cidr` accepts it, else raise."""
    parse_cidr(value, what)
    return str.__str__(value)


def parse_proxy_url(value, what="proxy URL"):
    """Parse a forward proxy ``[scheme://][user[:password]@]host[:port][/]``.

    ``scheme`` is ``http`` (the default when omitted) or ``https``; user and
    password come together or not at all, and use RFC 3986 user information
    characters (Synapse does not percent-decode them).
    Returns a dict with ``scheme``, ``username`` (or None), ``password`` (or
    None), ``host``, ``port`` (int or None). Errors carry the value with the
    password replaced by ``***`` (``redacted=True``), also after
    :meth:`MatrixNameError.for_argument`.
    """
    try:
        return _parse_proxy_url(value, what)
    except MatrixNameError as error:
        shown = redact_proxy_url(str.__str__(value)) if isinstance(value, str) else value
        raise MatrixNameError(error.rule, value=shown, redacted=True)


def _parse_proxy_url(value, what):
    text = _text(value, what)
    scheme = "http"
    rest = text
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme not in ("http", "https"):
            raise MatrixNameError(
                "%s: scheme must be 'http' or 'https' (lowercase), not '%s'" % (what, scheme)
            )
    if rest.endswith("/"):
        rest = rest[:-1]
    if "/" in rest or "?" in rest or "#" in rest:
        raise MatrixNameError(
            "%s must not have a path, query or fragment (only an optional trailing '/')" % what
        )
    username = password = None
    userinfo, sep, hostport = rest.rpartition("@")
    if sep:
        if not _USERINFO.fullmatch(userinfo):
            raise MatrixNameError(
                "%s: user and password may contain only letters, digits and -._~!$&'()*+,;= "
                "(Synapse sends them as written, without percent-decoding)" % what
            )
        username, sep, password = userinfo.partition(":")
        if not username:
            raise MatrixNameError("%s: user name before '@' must not be empty" % what)
        if not password:
            raise MatrixNameError(
                "%s: a user name needs a password (user:password@host); Synapse sends "
                "no credentials at all when either is missing" % what
            )
    else:
        hostport = rest
    if not hostport:
        raise MatrixNameError("%s must name a host" % what)
    host, port, _kind = _split_host_port(hostport, what)
    return {"scheme": scheme, "username": username, "password": password, "host": host, "port": port}


def redact_proxy_url(text):
    """``text`` with any password in ``user:password@`` replaced by ``***``."""
    head, sep, tail = text.rpartition("@")
    if not sep:
        return text
    prefix = ""
    if "://" in head:
        prefix, head = head.split("://", 1)
        prefix += "://"
    user, colon, _password = head.partition(":")
    return "%s%s%s@%s" % (prefix, user, ":***" if colon else "", tail)


def validate_proxy_url(value, what="proxy URL"):
    """Return ``value`` if :func:`parse_proxy_url` accepts it, else raise."""
    parse_proxy_url(value, what)
    return str.__str__(value)


def validate_no_proxy_entry(value, what="no_proxy entry"):
    """Return ``value`` if it is one ``no_proxy`` entry, else raise.

    Accepted: ``*``; a DNS name; ``.domain`` (the domain and its subdomains);
    an IPv4 address; an IPv6 address, bare or in brackets; an IPv4 or IPv6
    network in CIDR notation (host bits zero). No ports, no ``*.domain``
    wildcards (write ``.domain``), no commas (entries are joined with ``,``).
    """
    text = _text(value, what)
    if text == "*":
        return text
    if "," in text:
        raise MatrixNameError("%s must be a single entry (no ',')" % what)
    if text.startswith("*"):
        raise MatrixNameError(
            "%s: wildcards other than a lone '*' are not understood; write '.example.com' "
            "to match example.com and its subdomains" % what
        )
    if "/" in text:
        parse_cidr(text, what)
        return text
    if text.startswith("["):
        if not text.endswith("]"):
            raise MatrixNameError("%s must not include a port" % what)
        _check_ipv6(text[1:-1], what)
        return text
    if ":" in text:
        if text.count(":") == 1:
            raise MatrixNameError("%s must not include a port" % what)
        _check_ipv6(text, what)
        return text
    if text.startswith("."):
        _check_dns_name(text[1:], what)
        return text
    _classify_host(text, what)
    return text


# ----------------------------------------------------------- serialisation


def passes(validator, value):
    """True when ``validator(value)`` accepts ``value``: the body of every test plugin."""
    try:
        validator(value)
    except MatrixNameError:
        return False
    return True


def canonical_json(data):
    """JSON text with sorted keys, no whitespace, ASCII only (``\\uXXXX`` escapes).

    The same data always gives the same bytes, whatever serves them.
    """
    return json.dumps(
        _plain(data, "value"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def _plain(value, path):
    """Deep copy into plain JSON types; raises MatrixNameError naming the path."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise MatrixNameError("%s must be a finite number (JSON has no NaN or Infinity)" % path)
        return float(value)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise MatrixNameError(
                    "%s: keys must be strings (JSON objects), not %s" % (path, _type_name(key))
                )
            key = str.__str__(key)
            result[key] = _plain(item, "%s[%s]" % (path, repr(key)))
        return result
    if isinstance(value, (list, tuple)):
        return [_plain(item, "%s[%d]" % (path, index)) for index, item in enumerate(value)]
    raise MatrixNameError("%s must be JSON data, not %s" % (path, _type_name(value)))


def _merge(base, extra, path, owners=None, owner=None):
    """Deep-merge ``extra`` into ``base`` (both plain); a key set in both must hold mappings.

    ``owners`` maps the top-level keys of ``base`` to the argument that set
    them, so that a conflict names the argument to use instead.
    """
    for key, item in extra.items():
        where = "%s[%s]" % (path, repr(key))
        key_owner = owner if owner is not None else (owners or {}).get(key, "another argument")
        if key not in base:
            base[key] = item
        elif isinstance(base[key], dict) and isinstance(item, dict):
            _merge(base[key], item, where, owner=key_owner)
        else:
            raise MatrixNameError(
                "%s would override a value set from the argument %s; set it there, not in extra"
                % (where, key_owner)
            )
    return base


# ------------------------------------------------------------ delegation


def well_known_server_body(server_target):
    """Body of ``/.well-known/matrix/server``: ``{"m.server":"<server_target>"}``.

    ``server_target`` is ``host[:port]`` (the Matrix server name grammar);
    returned as canonical JSON text (see :func:`canonical_json`).
    """
    try:
        target = validate_server_name(server_target)
    except MatrixNameError as error:
        raise error.for_argument("server_target", server_target)
    return canonical_json({"m.server": target})


MSC2965_AUTHENTICATION = "org.matrix.msc2965.authentication"
MSC4143_RTC_FOCI = "org.matrix.msc4143.rtc_foci"


def _named_url(value, argument, what):
    try:
        return validate_https_base_url(value, what)
    except MatrixNameError as error:
        raise error.for_argument(argument, value)


def _rtc_focus(value, index):
    """One entry of ``rtc_foci``: a LiveKit JWT service URL, or a mapping with ``type``."""
    what = "rtc_foci[%d]" % index
    if isinstance(value, str):
        return {"type": "livekit", "livekit_service_url": validate_https_base_url(value, what)}
    if not isinstance(value, Mapping):
        raise MatrixNameError(
            "%s must be a LiveKit JWT service URL (string) or a mapping with 'type', not %s"
            % (what, _type_name(value))
        )
    focus = _plain(value, what)
    kind = focus.get("type")
    if not isinstance(kind, str) or not kind:
        raise MatrixNameError("%s must have a 'type' (a non-empty string, for example 'livekit')" % what)
    if kind == "livekit":
        if "livekit_service_url" not in focus:
            raise MatrixNameError("%s of type 'livekit' must have 'livekit_service_url'" % what)
        validate_https_base_url(focus["livekit_service_url"], "%s['livekit_service_url']" % what)
    return focus


def _rtc_foci(value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise MatrixNameError("rtc_foci must be a list, not %s" % _type_name(value))
    foci = [_rtc_focus(item, index) for index, item in enumerate(value)]
    seen = []
    for index, focus in enumerate(foci):
        if focus in seen:
            raise MatrixNameError(
                "rtc_foci[%d] repeats rtc_foci[%d]; list each focus once" % (index, seen.index(focus))
            )
        seen.append(focus)
    return foci


def well_known_client_body(base_url, identity_server=None, extra=None,
                           auth_issuer=None, auth_account=None, rtc_foci=None):
    """Body of ``/.well-known/matrix/client`` as canonical JSON text.

    ``{"m.homeserver":{"base_url":base_url}}``, plus
    ``"m.identity_server":{"base_url":identity_server}`` unless
    ``identity_server`` is None or empty; with ``auth_issuer``, the MSC2965
    ``"org.matrix.msc2965.authentication":{"issuer":...,"account":...}``
    (delegated authentication, e.g. Matrix Authentication Service;
    ``account`` only with ``auth_account``, which needs ``auth_issuer``);
    with a non-empty ``rtc_foci``, the MSC4143
    ``"org.matrix.msc4143.rtc_foci"`` list (a string is a LiveKit JWT service
    URL, ``{"type":"livekit","livekit_service_url":...}``; a mapping needs a
    ``type``, and a ``livekit_service_url`` when that type is ``livekit``).
    The result is deep-merged with ``extra`` (a mapping of any JSON data),
    which may add keys anywhere but must not replace a value set from a named
    argument. URLs: absolute ``https``, optional port and path, no user
    info, query or fragment; kept exactly as given (trailing slash too).
    """
    body = {"m.homeserver": {"base_url": _named_url(base_url, "base_url", "homeserver base URL")}}
    owners = {"m.homeserver": "base_url"}
    if identity_server is not None and identity_server != "":
        body["m.identity_server"] = {
            "base_url": _named_url(identity_server, "identity_server", "identity server base URL")
        }
        owners["m.identity_server"] = "identity_server"
    if auth_account is not None and auth_account != "" and (auth_issuer is None or auth_issuer == ""):
        raise MatrixNameError(
            "auth_account needs auth_issuer (the account management URL belongs to an issuer)"
        ).for_argument("auth_account", auth_account)
    if auth_issuer is not None and auth_issuer != "":
        authentication = {"issuer": _named_url(auth_issuer, "auth_issuer", "authentication issuer URL")}
        if auth_account is not None and auth_account != "":
            authentication["account"] = _named_url(auth_account, "auth_account", "account management URL")
        body[MSC2965_AUTHENTICATION] = authentication
        owners[MSC2965_AUTHENTICATION] = "auth_issuer"
    try:
        foci = _rtc_foci(rtc_foci)
    except MatrixNameError as error:
        raise error.for_argument("rtc_foci", rtc_foci)
    if foci:
        body[MSC4143_RTC_FOCI] = foci
        owners[MSC4143_RTC_FOCI] = "rtc_foci"
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise MatrixNameError(
            "extra must be a mapping (dict), not %s" % _type_name(extra)
        ).for_argument("extra", extra)
    try:
        _merge(body, _plain(extra, "extra"), "extra", owners)
    except MatrixNameError as error:
        raise error.for_argument("extra", extra)
    return canonical_json(body)


def srv_record_lines(server_name, target, port, ttl=3600, priority=10, weight=5, legacy=False):
    """Zone-file lines delegating federation for ``server_name`` with SRV.

    ``_matrix-fed._tcp.<server_name>. <ttl> IN SRV <priority> <weight> <port> <target>.``
    and, when ``legacy`` is true, the same line for the deprecated
    ``_matrix._tcp`` name after it. ``server_name`` and ``target`` are DNS
    names without port or trailing dot (the dot is added here); SRV is only
    consulted for server names without an explicit port that are not IP
    literals.
    """
    checks = (
        ("server_name", server_name, lambda v: validate_dns_name(
            v, "server name", "SRV records are looked up only for server names that are DNS "
            "names without a port; %s" % SPEC_SRV)),
        ("target", target, lambda v: validate_dns_name(
            v, "SRV target", "an SRV target is a host name and the port goes in the 'port' argument; RFC 2782")),
        ("port", port, lambda v: validate_port(v, "port")),
        ("ttl", ttl, lambda v: _int_in_range(v, 0, _TTL_MAX, "ttl")),
        ("priority", priority, lambda v: _int_in_range(v, 0, _U16_MAX, "priority")),
        ("weight", weight, lambda v: _int_in_range(v, 0, _U16_MAX, "weight")),
    )
    values = []
    for argument, value, check in checks:
        try:
            values.append(check(value))
        except MatrixNameError as error:
            raise error.for_argument(argument, value)
    if not isinstance(legacy, bool):
        raise MatrixNameError(
            "legacy must be a boolean, not %s" % _type_name(legacy)
        ).for_argument("legacy", legacy)
    name, host, port_number, ttl_value, priority_value, weight_value = values
    owners = ["_matrix-fed._tcp"]
    if legacy:
        owners.append("_matrix._tcp")
    return [
        "%s.%s. %d IN SRV %d %d %d %s." % (
            owner, name, ttl_value, priority_value, weight_value, port_number, host)
        for owner in owners
    ]
