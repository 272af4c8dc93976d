# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.relayd_namespace_patterns (logic in module_utils/relayd_patterns.py)."""

DOCUMENTATION = r"""
name: relayd_namespace_patterns
version_added: 0.2.0
short_description: The homeserver namespaces of some route paths, and fnmatch(3) patterns around them, for relayd
description:
  - A namespace is the first segment of a route path that has more than one segment
    (C(/_synapse/admin) gives C(/_synapse/)). The homeserver owns it, but only some of it is routed.
  - relayd matches raw paths and cannot decode them, so the relayd role refuses what a decoder
    further on could turn into a namespace (every spelling with a percent-encoded character in the
    namespace segment or in place of its closing slash, C(/%*), C(/_%*), ... C(/_synapse%*)), and the
    rest of each namespace that no route forwards (C(/_synapse/*), written after the routes).
options:
  _input:
    description: Route paths (the C(match.path) of the routes that forward to or refuse for the homeserver).
    type: list
    elements: str
    required: true
seealso:
  - plugin: mxedge.matrix.route_table
    plugin_type: filter
  - plugin: mxedge.matrix.relayd_path_patterns
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Namespaces of the client listener's routes
  ansible.builtin.debug:
    msg: "{{ ['/_synapse/admin', '/_matrix', '/_synapse/client', '/health'] | mxedge.matrix.relayd_namespace_patterns }}"
# msg is {'namespaces': ['/_synapse/'], 'rest': ['/_synapse/*'],
#         'encoded': ['/%*', '/_%*', '/_s%*', '/_sy%*', '/_syn%*', '/_syna%*', '/_synap%*', '/_synaps%*', '/_synapse%*']}
"""

RETURN = r"""
_value:
  description: The namespaces and their patterns.
  type: dict
  contains:
    namespaces:
      description: Namespaces (C(/<segment>/)) in order of first appearance.
      type: list
      elements: str
    rest:
      description: One pattern per namespace for everything below it.
      type: list
      elements: str
    encoded:
      description: Percent-encoded spellings of every namespace, without duplicates.
      type: list
      elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.relayd_patterns import (
    RelaydPatternError,
    namespace_patterns,
)


def relayd_namespace_patterns(paths):
    """Return the namespaces of ``paths`` and the patterns around them."""
    try:
        return namespace_patterns(list(paths) if not isinstance(paths, (str, bytes)) else paths)
    except (RelaydPatternError, TypeError) as error:
        raise AnsibleFilterError("relayd_namespace_patterns: %s" % error) from None


class FilterModule:
    """mxedge.matrix.relayd_namespace_patterns"""

    def filters(self):
        return {"relayd_namespace_patterns": relayd_namespace_patterns}
