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
    when O(identity_server) is set, deep-merged with O(extra).'
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
  extra:
    description:
      - More keys for the client JSON (sliding sync proxy, RTC foci, authentication issuer, ...),
        deep-merged into the result. Any JSON data (mappings with string keys, lists, strings,
        finite numbers, booleans, null).
      - O(extra) may add keys anywhere, also inside C(m.homeserver), but must not replace
        C(m.homeserver.base_url), or C(m.identity_server.base_url) when O(identity_server) is set;
        that is an error (set them through the arguments instead).
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

- name: With an identity server and extra keys
  ansible.builtin.set_fact:
    well_known_client_body: >-
      {{ 'https://matrix.example.com'
         | mxedge.matrix.well_known_client(
             identity_server='https://vector.im',
             extra={'org.matrix.msc4143.rtc_foci': [{'type': 'livekit',
                                                     'livekit_service_url': 'https://rtc.example.com'}]}) }}
# {"m.homeserver":{"base_url":"https://matrix.example.com"},"m.identity_server":{"base_url":"https://vector.im"},
#  "org.matrix.msc4143.rtc_foci":[{"livekit_service_url":"https://rtc.example.com","type":"livekit"}]}
# (one line)
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


def well_known_client(base_url, identity_server=None, extra=None):
    """Return the canonical JSON body of /.well-known/matrix/client."""
    try:
        return well_known_client_body(base_url, identity_server=identity_server, extra=extra)
    except MatrixNameError as error:
        raise AnsibleFilterError("well_known_client: %s" % error) from None


class FilterModule:
    """mxedge.matrix.well_known_client"""

    def filters(self):
        return {"well_known_client": well_known_client}
