# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.caddy_listeners (logic in module_utils/caddy_config.py)."""

DOCUMENTATION = r"""
name: caddy_listeners
version_added: 0.2.0
short_description: The operator's sites of a Caddy configuration, from what caddy adapt prints
description:
  - Reads the JSON that C(caddy adapt --adapter caddyfile --config <Caddyfile>) prints and returns one listener per
    site and port (C(port), C(names), C(default), C(where), C(bind)), the input of
    M(mxedge.matrix.alongside_conflicts) (docs/alongside.md).
  - Sites the proxy role marked as its own (C(vars mxedge_matrix <file>) with a file under O(own_paths)) are left out.
  - A server with host names and automatic HTTPS on also answers them on the HTTP port with redirects (Caddy adds
    them when it loads the configuration); those are listed too.
options:
  _input:
    description: The output of C(caddy adapt) (JSON text, or parsed).
    type: raw
    required: true
  own_paths:
    description: Files and directories of the role's own.
    type: list
    elements: str
    default: []
  source:
    description: What the listeners' C(where) names as their origin (the Caddyfile's path).
    type: str
    default: the Caddyfile
"""

EXAMPLES = r"""
- name: Stop when the Matrix sites would collide with the operator's
  ansible.builtin.assert:
    that: __conflicts | length == 0
    fail_msg: "{{ __conflicts | join(' ') }}"
  vars:
    __listeners: "{{ __adapted.stdout | mxedge.matrix.caddy_listeners(['/etc/caddy/mxedge-matrix'], '/etc/caddy/Caddyfile') }}"
    __conflicts: "{{ __listeners | mxedge.matrix.alongside_conflicts(_matrix_routes) }}"
"""

RETURN = r"""
_value:
  description: One listener per site and port, in the order of the servers.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.caddy_config import CaddyConfigError, listeners


def caddy_listeners(adapted, own_paths=None, source="the Caddyfile"):
    """Return the operator's listeners of the ``caddy adapt`` output ``adapted``."""
    try:
        return listeners(adapted, list(own_paths or []), str(source))
    except CaddyConfigError as error:
        raise AnsibleFilterError("caddy_listeners: %s" % error) from None


class FilterModule:
    """mxedge.matrix.caddy_listeners"""

    def filters(self):
        return {"caddy_listeners": caddy_listeners}
