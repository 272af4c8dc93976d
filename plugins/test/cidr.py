# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Test mxedge.matrix.cidr (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: cidr
version_added: 0.1.0
short_description: Is the value an IPv4 or IPv6 network in CIDR notation
description:
  - True for C(address/prefix) where C(address) is an IPv4 address (octets 0-255, no leading
    zeros) or an IPv6 address (no brackets, no zone index) and C(prefix) is 0-32 or 0-128.
  - The prefix length is required (write C(/32) or C(/128) for one address) and the host bits must
    be zero (C(192.0.2.0/24), not C(192.0.2.1/24)), so that every proxy flavour reads the same
    network and none warns or silently masks.
  - Any value that is not a string is not a match. The rules live in the collection's module_utils
    C(matrix_names), shared with its filters and the C(matrix) role's preflight.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the admin networks
  ansible.builtin.assert:
    that: matrix_admin_allowed_networks | reject('mxedge.matrix.cidr') | list | length == 0
    fail_msg: >-
      matrix_admin_allowed_networks must be a list of networks in CIDR notation with host bits
      zero (e.g. 192.0.2.0/24, 2001:db8::/32), got {{ matrix_admin_allowed_networks }}

# '10.0.0.0/8' is mxedge.matrix.cidr       -> true
# '2001:db8::/32' is mxedge.matrix.cidr    -> true
# '10.0.0.1/8' is mxedge.matrix.cidr       -> false (host bits set)
# '10.0.0.1' is mxedge.matrix.cidr         -> false (no prefix length)
"""

RETURN = r"""
_value:
  description: True if the input is a network in CIDR notation with host bits zero, false otherwise.
  type: boolean
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    passes,
    validate_cidr,
)


def cidr(value):
    """True if ``value`` passes ``validate_cidr``."""
    return passes(validate_cidr, value)


class TestModule:
    """mxedge.matrix.cidr"""

    def tests(self):
        return {"cidr": cidr}
