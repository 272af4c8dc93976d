# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Test mxedge.matrix.proxy_url (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: proxy_url
version_added: 0.1.0
short_description: Is the value a forward proxy URL for a homeserver
description:
  - True for C([scheme://][user[:password]@]host[:port][/]), the form Synapse reads from
    C(http_proxy) and C(https_proxy).
  - C(scheme) is C(http) or C(https) (lowercase; C(http) when left out). User and password use
    RFC 3986 user information characters (percent-encode others, C(@) as C(%40)). C(host) is a
    DNS name, IPv4 literal or bracketed IPv6 literal; C(port) 1-65535. No path other than a single
    trailing C(/), no query, no fragment.
  - The empty string is not a match; test for it separately when it means "no proxy".
  - Any value that is not a string is not a match. The rules live in the collection's module_utils
    C(matrix_names), shared with its filters and the C(matrix) role's preflight.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the forward proxy
  ansible.builtin.assert:
    that: >-
      matrix_forward_proxy_http == '' or
      matrix_forward_proxy_http is mxedge.matrix.proxy_url
    fail_msg: >-
      matrix_forward_proxy_http must be empty or [http|https://][user:password@]host[:port]

# 'http://proxy.example.com:3128' is mxedge.matrix.proxy_url       -> true
# 'user:p%40ss@10.0.1.1:8080/' is mxedge.matrix.proxy_url         -> true
# 'socks5://proxy.example.com:1080' is mxedge.matrix.proxy_url     -> false
"""

RETURN = r"""
_value:
  description: True if the input is a valid forward proxy URL, false otherwise.
  type: boolean
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    passes,
    validate_proxy_url,
)


def proxy_url(value):
    """True if ``value`` passes ``validate_proxy_url``."""
    return passes(validate_proxy_url, value)


class TestModule:
    """mxedge.matrix.proxy_url"""

    def tests(self):
        return {"proxy_url": proxy_url}
