# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Test mxedge.matrix.https_base_url (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: https_base_url
version_added: 0.1.0
short_description: Is the value an https base URL (no query, no fragment)
description:
  - True for an absolute URL with the scheme C(https) (lowercase), a host that is a DNS name
    (punycode for internationalised names), an IPv4 literal or a bracketed IPv6 literal,
    an optional port 1-65535 and an optional path of RFC 3986 path characters and C(%XX) escapes.
  - False for user information (C(user@)), a query (C(?...)) or a fragment (C(#...)), even empty.
  - The rule the Matrix specification sets for C(m.homeserver) and C(m.identity_server) base URLs
    in C(/.well-known/matrix/client).
  - Any value that is not a string is not a match. The rules live in the collection's module_utils
    C(matrix_names), shared with its filters and the C(matrix) role's preflight.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the identity server URL
  ansible.builtin.assert:
    that: >-
      matrix_identity_server_url == '' or
      matrix_identity_server_url is mxedge.matrix.https_base_url
    fail_msg: >-
      matrix_identity_server_url must be empty or an https URL without query or fragment,
      got '{{ matrix_identity_server_url }}'

# 'https://matrix.example.com/' is mxedge.matrix.https_base_url        -> true
# 'https://[2001:db8::1]:8443/matrix' is mxedge.matrix.https_base_url  -> true
# 'http://matrix.example.com' is mxedge.matrix.https_base_url          -> false
# 'https://matrix.example.com/?a=b' is mxedge.matrix.https_base_url    -> false
"""

RETURN = r"""
_value:
  description: True if the input is a valid https base URL, false otherwise.
  type: boolean
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    passes,
    validate_https_base_url,
)


def https_base_url(value):
    """True if ``value`` passes ``validate_https_base_url``."""
    return passes(validate_https_base_url, value)


class TestModule:
    """mxedge.matrix.https_base_url"""

    def tests(self):
        return {"https_base_url": https_base_url}
