# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Test mxedge.matrix.no_proxy_entry (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: no_proxy_entry
version_added: 0.1.0
short_description: Is the value one entry of a C(no_proxy) list
description:
  - True for one C(no_proxy) entry as Synapse understands it, a lone C(*) (no proxy at all),
    a DNS name, C(.domain) (the domain and its subdomains), an IPv4 address, an IPv6 address
    (bare or in brackets), or an IPv4 or IPv6 network in CIDR notation with host bits zero
    (see P(mxedge.matrix.cidr#test)).
  - False for ports, C(*.domain) wildcards (write C(.domain)), commas (entries are joined with C(,)
    when the variable is written) and whitespace.
  - Any value that is not a string is not a match. The rules live in the collection's module_utils
    C(matrix_names), shared with its filters and the C(matrix) role's preflight.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the no_proxy entries
  ansible.builtin.assert:
    that: matrix_forward_proxy_no_proxy | reject('mxedge.matrix.no_proxy_entry') | list | length == 0
    fail_msg: >-
      matrix_forward_proxy_no_proxy entries must be host names, .domain suffixes, IP addresses,
      CIDR networks or '*', got {{ matrix_forward_proxy_no_proxy }}

# 'localhost' is mxedge.matrix.no_proxy_entry       -> true
# '.example.com' is mxedge.matrix.no_proxy_entry    -> true
# '10.0.0.0/8' is mxedge.matrix.no_proxy_entry      -> true
# '::1' is mxedge.matrix.no_proxy_entry             -> true
# 'example.com:443' is mxedge.matrix.no_proxy_entry -> false
"""

RETURN = r"""
_value:
  description: True if the input is a valid no_proxy entry, false otherwise.
  type: boolean
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    passes,
    validate_no_proxy_entry,
)


def no_proxy_entry(value):
    """True if ``value`` passes ``validate_no_proxy_entry``."""
    return passes(validate_no_proxy_entry, value)


class TestModule:
    """mxedge.matrix.no_proxy_entry"""

    def tests(self):
        return {"no_proxy_entry": no_proxy_entry}
