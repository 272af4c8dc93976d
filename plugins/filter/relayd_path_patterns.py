# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.relayd_path_patterns (logic in module_utils/relayd_patterns.py)."""

DOCUMENTATION = r"""
name: relayd_path_patterns
version_added: 0.2.0
short_description: fnmatch(3) patterns of the raw paths a route of the route table answers, for relayd
description:
  - relayd.conf(5) C(path) rules match the raw request path (not decoded, not normalised, the query
    split off) with fnmatch(3), where C(*) also matches C(/). An C(exact) route becomes its path;
    a C(prefix) route becomes its path and C(<path>/*) (never C(<path>foo)).
  - That is the route's raw-URI rule (C(raw_regex), behaviour MX04) applied to the raw path. A route
    whose C(raw_regex) is not the table's standard one for its kind and path cannot be written in
    relayd and fails the task, as does a path holding an fnmatch metacharacter or a character
    relayd.conf cannot quote.
options:
  _input:
    description: The C(match) of a route of the route table (C(kind), C(path), C(raw_regex)).
    type: dict
    required: true
seealso:
  - plugin: mxedge.matrix.route_table
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Paths of every route of the client listener
  ansible.builtin.debug:
    msg: "{{ _matrix_routes.vhosts[0].routes | map(attribute='match') | map('mxedge.matrix.relayd_path_patterns') | list }}"
# msg is [['/_synapse/admin', '/_synapse/admin/*'], ['/_matrix', '/_matrix/*'], ..., ['/health']]
"""

RETURN = r"""
_value:
  description: fnmatch(3) patterns of the raw path.
  type: list
  elements: str
  sample: ['/_matrix', '/_matrix/*']
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.relayd_patterns import (
    RelaydPatternError,
    route_path_patterns,
)


def relayd_path_patterns(match):
    """Return the fnmatch patterns of the raw paths ``match`` answers."""
    try:
        return route_path_patterns(dict(match) if hasattr(match, "keys") else match)
    except RelaydPatternError as error:
        raise AnsibleFilterError("relayd_path_patterns: %s" % error) from None


class FilterModule:
    """mxedge.matrix.relayd_path_patterns"""

    def filters(self):
        return {"relayd_path_patterns": relayd_path_patterns}
