# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.relayd_body_limit_patterns (logic in module_utils/relayd_patterns.py)."""

DOCUMENTATION = r"""
name: relayd_body_limit_patterns
version_added: 0.2.0
short_description: fnmatch(3) patterns of the C(Content-Length) values above a body limit, for relayd
description:
  - relayd.conf(5) filter rules compare header values with fnmatch(3) only; they cannot compare numbers.
    This filter writes "larger than I(limit)" as patterns on the decimal value of C(Content-Length),
    one for any value with more digits than the limit, and one per digit of the limit below 9
    (the same leading digits, then a larger digit, then any digits).
  - A value matches one of the patterns exactly when it is a decimal integer above the limit
    (values with leading zeros, which HTTP clients do not send, are not covered).
options:
  _input:
    description: The body limit in bytes (a route's C(policy.body_limit) in the route table).
    type: int
    required: true
seealso:
  - plugin: mxedge.matrix.route_table
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Patterns of Content-Length values above 50 MiB
  ansible.builtin.debug:
    msg: "{{ 52428800 | mxedge.matrix.relayd_body_limit_patterns }}"
# msg is ['?????????*', '[6-9]???????', '5[3-9]??????', '52[5-9]?????', '524[3-9]????',
#         '5242[9-9]???', '52428[9-9]??', '524288[1-9]?', '5242880[1-9]']
"""

RETURN = r"""
_value:
  description: fnmatch(3) patterns, the "more digits" one first.
  type: list
  elements: str
  sample: ['???*', '[2-9]??', '1[1-9]?', '10[1-9]']
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.relayd_patterns import (
    RelaydPatternError,
    content_length_over,
)


def relayd_body_limit_patterns(limit):
    """Return the fnmatch patterns of the Content-Length values above ``limit``."""
    try:
        return content_length_over(limit)
    except RelaydPatternError as error:
        raise AnsibleFilterError("relayd_body_limit_patterns: %s" % error) from None


class FilterModule:
    """mxedge.matrix.relayd_body_limit_patterns"""

    def filters(self):
        return {"relayd_body_limit_patterns": relayd_body_limit_patterns}
