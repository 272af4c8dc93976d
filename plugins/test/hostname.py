# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Test mxedge.matrix.hostname (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: hostname
version_added: 0.1.0
short_description: Is the value a host name or IP literal without port
description:
  - True for the host part of a Matrix server name with no port, a DNS name, a dotted-quad
    IPv4 literal or an IPv6 literal in square brackets; the same rules as
    P(mxedge.matrix.server_name#test) otherwise.
  - Suits variables such as C(matrix_homeserver_fqdn) that must not carry a port.
  - Any value that is not a string is not a match. The rules live in the collection's module_utils
    C(matrix_names), shared with its filters and the C(matrix) role's preflight.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the homeserver host name
  ansible.builtin.assert:
    that: matrix_homeserver_fqdn is mxedge.matrix.hostname
    fail_msg: >-
      matrix_homeserver_fqdn must be a DNS name, IPv4 address or [IPv6] address
      without port, got '{{ matrix_homeserver_fqdn }}'

# 'matrix.example.com' is mxedge.matrix.hostname       -> true
# '[::1]' is mxedge.matrix.hostname                    -> true
# 'matrix.example.com:443' is mxedge.matrix.hostname   -> false (port)
# '::1' is mxedge.matrix.hostname                      -> false (brackets missing)
"""

RETURN = r"""
_value:
  description: True if the input is a host name or IP literal without port, false otherwise.
  type: boolean
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    passes,
    validate_hostname,
)


def hostname(value):
    """True if ``value`` passes ``validate_hostname``."""
    return passes(validate_hostname, value)


class TestModule:
    """mxedge.matrix.hostname"""

    def tests(self):
        return {"hostname": hostname}
