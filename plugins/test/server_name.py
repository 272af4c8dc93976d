# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Test mxedge.matrix.server_name (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: server_name
version_added: 0.1.0
short_description: Is the value a Matrix server name (C(host[:port]))
description:
  - True for a Matrix server name as the specification's grammar (appendix "Server Name") and the
    conventional host name rules define it, C(host[:port]).
  - C(host) is a DNS name (letters, digits, C(-), C(.); at most 255 characters; labels of 1-63
    characters not starting or ending with C(-); no empty label, so no leading or trailing dot;
    last label not all digits), a dotted-quad IPv4 literal (octets 0-255, no leading zeros) or an
    IPv6 literal in square brackets without zone index. Internationalised names only in punycode
    (C(xn--...)). Any letter case.
  - C(port) is optional, 1-65535, decimal without leading zeros.
  - Any value that is not a string is not a match. The rules live in the collection's module_utils
    C(matrix_names), shared with its filters and the C(matrix) role's preflight.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the server name early
  ansible.builtin.assert:
    that: matrix_server_name is mxedge.matrix.server_name
    fail_msg: >-
      matrix_server_name must be a Matrix server name host[:port]
      (DNS name, IPv4 or [IPv6], port 1-65535), got '{{ matrix_server_name }}'

# 'example.com' is mxedge.matrix.server_name           -> true
# 'example.com:8448' is mxedge.matrix.server_name      -> true
# '[2001:db8::1]:8448' is mxedge.matrix.server_name    -> true
# '2001:db8::1' is mxedge.matrix.server_name           -> false (brackets missing)
# 'example.com.' is mxedge.matrix.server_name          -> false (trailing dot)
# 'example.com:0' is mxedge.matrix.server_name         -> false
"""

RETURN = r"""
_value:
  description: True if the input is a valid Matrix server name, false otherwise.
  type: boolean
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    passes,
    validate_server_name,
)


def server_name(value):
    """True if ``value`` passes ``validate_server_name``."""
    return passes(validate_server_name, value)


class TestModule:
    """mxedge.matrix.server_name"""

    def tests(self):
        return {"server_name": server_name}
