# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.alongside_conflicts (logic in module_utils/alongside.py)."""

DOCUMENTATION = r"""
name: alongside_conflicts
version_added: 0.2.0
short_description: Where the Matrix listeners would collide with the operator's own sites on the same proxy
description:
  - Compares the operator's listeners (read from the proxy's live configuration by the flavour's preflight,
    with the daemon's own tool) with the route table's listeners and returns one message per conflict,
    naming the variable that placed the Matrix listener there (docs/alongside.md).
  - A conflict is the same host name on the same port; a Matrix listener answering every host name on a port
    the operator uses; with O(share_ports=false), any operator listener on a Matrix port; with
    C(matrix_well_known_site=operator), no operator site for the server name's host on the well-known port;
    with C(matrix_well_known_site=own), an operator site already serving that host there.
options:
  _input:
    description: The operator's listeners, each a dict with C(port), C(names) (lower-case host names, C(*) for
      every name), C(default) and C(where) (the file and line, or the section).
    type: list
    elements: dict
    required: true
  table:
    description: The route table, C(_matrix_routes).
    type: dict
    required: true
  share_ports:
    description: Whether the daemon can serve two of its sections on one port, picking by host name.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Stop when the Matrix sites would collide with the operator's
  ansible.builtin.assert:
    that: __conflicts | length == 0
    fail_msg: "{{ __conflicts | join(' ') }}"
  vars:
    __conflicts: "{{ __listeners | mxedge.matrix.alongside_conflicts(_matrix_routes) }}"
"""

RETURN = r"""
_value:
  description: One message per conflict; empty when there is none.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.alongside import AlongsideError, conflicts


def alongside_conflicts(listeners, table, share_ports=True):
    """Return the conflict messages of ``listeners`` against the route ``table``."""
    try:
        return conflicts(list(listeners or []), table, share_ports=bool(share_ports))
    except AlongsideError as error:
        raise AnsibleFilterError("alongside_conflicts: %s" % error) from None


class FilterModule:
    """mxedge.matrix.alongside_conflicts"""

    def filters(self):
        return {"alongside_conflicts": alongside_conflicts}
