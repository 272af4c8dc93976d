# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.well_known_client (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: well_known_client
version_added: 0.1.0
short_description: Body of C(/.well-known/matrix/client) as canonical JSON text
description:
  - Returns the JSON text C(https://<server_name>/.well-known/matrix/client) answers with, telling
    clients where the homeserver (and optionally the identity server) is.
  - 'Result: C({"m.homeserver":{"base_url":...}}), plus C("m.identity_server":{"base_url":...})
    when O(identity_server) is set, the MSC2965 C("org.matrix.msc2965.authentication":{"issuer":...,"account":...})
    when O(auth_issuer) is set, the MSC4143 C("org.matrix.msc4143.rtc_foci":[...]) when O(rtc_foci) is
    not empty, deep-merged with O(extra).'
  - The text is canonical (sorted keys, no whitespace, ASCII only with C(\uXXXX) escapes for other
    characters, no trailing newline), so every proxy flavour serves the same bytes.
  - Invalid input fails the task with an error naming the filter, the argument and the rule.
positional: identity_server, extra
options:
  _input:
    description:
      - Homeserver base URL for C(m.homeserver.base_url), for example C(https://matrix.example.com/).
      - Absolute C(https) URL (scheme in lowercase) whose host is a DNS name (punycode for
        internationalised names), IPv4 literal or bracketed IPv6 literal; optional port 1-65535;
        optional path of RFC 3986 path characters; no user information, no query, no fragment.
      - Kept exactly as given, including a trailing slash.
    type: string
    required: true
  identity_server:
    description:
      - Identity server base URL for C(m.identity_server.base_url); same rules as the input.
      - V(null) or an empty string leaves C(m.identity_server) out.
    type: string
  auth_issuer:
    description:
      - Delegated authentication (MSC2965, for example Matrix Authentication Service) issuer URL, the
        C(issuer) of C(org.matrix.msc2965.authentication); same rules as the input.
      - V(null) or an empty string leaves C(org.matrix.msc2965.authentication) out.
    type: string
  auth_account:
    description:
      - Account management URL of the issuer, the C(account) of C(org.matrix.msc2965.authentication);
        same rules as the input. Needs O(auth_issuer).
    type: string
  rtc_foci:
    description:
      - MatrixRTC foci (MSC4143) for C(org.matrix.msc4143.rtc_foci), in order of preference.
      - A string is the URL of a LiveKit JWT service, short for
        C({"type":"livekit","livekit_service_url":<url>}); a mapping needs C(type) (a non-empty
        string) and, for C(type=livekit), C(livekit_service_url) (same rules as the input); other
        keys of a mapping are kept as JSON data. Each focus once.
      - An empty list (the default) leaves C(org.matrix.msc4143.rtc_foci) out.
    type: list
    elements: raw
    default: []
  extra:
    description:
      - More keys for the client JSON (sliding sync proxy, ...), deep-merged into the result. Any JSON data (mappings with string keys, lists, strings,
        finite numbers, booleans, null).
      - O(extra) may add keys anywhere, also inside C(m.homeserver), but must not replace a value
        set from a named argument (C(m.homeserver.base_url); C(m.identity_server.base_url),
        C(org.matrix.msc2965.authentication) and C(org.matrix.msc4143.rtc_foci) when their argument
        is set); that is an error naming the argument to use instead.
    type: dict
    default: {}
seealso:
  - plugin: mxedge.matrix.well_known_server
    plugin_type: filter
  - plugin: mxedge.matrix.https_base_url
    plugin_type: test
  - name: Matrix client-server API, well-known URI
    description: The C(/.well-known/matrix/client) document.
    link: https://spec.matrix.org/latest/client-server-api/#well-known-uris
"""

EXAMPLES = r"""
- name: Client discovery for example.com
  ansible.builtin.debug:
    msg: "{{ 'https://matrix.example.com/' | mxedge.matrix.well_known_client }}"
# msg is {"m.homeserver":{"base_url":"https://matrix.example.com/"}}

- name: With an identity server, delegated authentication and a LiveKit focus
  ansible.builtin.set_fact:
    well_known_client_body: >-
      {{ 'https://matrix.example.com'
         | mxedge.matrix.well_known_client(
             identity_server='https://vector.im',
             auth_issuer='https://auth.example.com/',
             auth_account='https://auth.example.com/account',
             rtc_foci=['https://rtc.example.com/livekit/jwt']) }}
# {"m.homeserver":{"base_url":"https://matrix.example.com"},"m.identity_server":{"base_url":"https://vector.im"},
#  "org.matrix.msc2965.authentication":{"account":"https://auth.example.com/account",
#  "issuer":"https://auth.example.com/"},
#  "org.matrix.msc4143.rtc_foci":[{"livekit_service_url":"https://rtc.example.com/livekit/jwt","type":"livekit"}]}
# (one line)

- name: Other keys through extra (here the sliding sync proxy of older clients)
  ansible.builtin.debug:
    msg: >-
      {{ 'https://matrix.example.com/'
         | mxedge.matrix.well_known_client(extra={'org.matrix.msc3575.proxy': {'url': 'https://sync.example.com'}}) }}
"""

RETURN = r"""
_value:
  description: Canonical JSON text of the client discovery document, no trailing newline.
  type: string
  sample: '{"m.homeserver":{"base_url":"https://matrix.example.com/"}}'
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    MatrixNameError,
    well_known_client_body,
)


def well_known_client(base_url, identity_server=None, extra=None, auth_issuer=None, auth_account=None, rtc_foci=None):
    """Return the canonical JSON body of /.well-known/matrix/client."""
    try:
        return well_known_client_body(
            base_url, identity_server=identity_server, extra=extra,
            auth_issuer=auth_issuer, auth_account=auth_account, rtc_foci=rtc_foci,
        )
    except MatrixNameError as error:
        raise AnsibleFilterError("well_known_client: %s" % error) from None


class FilterModule:
    """mxedge.matrix.well_known_client"""

    def filters(self):
        return {"well_known_client": well_known_client}
