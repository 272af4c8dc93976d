# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.synapse_worker_pools (logic in module_utils/synapse_workers.py)."""

DOCUMENTATION = r"""
name: synapse_worker_pools
version_added: 0.1.0
short_description: The endpoint classes a Synapse worker deployment routes, as the route table's worker pools
description:
  - For a C(matrix_workers) list, returns one item per endpoint class of Synapse's worker documentation that
    has workers to serve it, in route order, with the class's patterns, stickiness and the servers (address and
    port) the proxy forwards to (C(docs/contract.md), MX16).
  - A class without a worker stays on the main process; a stream-writer class whose stream has no writer goes to
    the client readers where Synapse allows it.
  - The list is not checked here; the matrix role's preflight checks it first (C(synapse_workers_problems)).
positional: addresses
options:
  _input:
    description: The C(matrix_workers) list.
    type: list
    elements: dict
    required: true
  addresses:
    description: Inventory host to the address the proxy reaches it on (C(matrix_worker_hosts)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Show where the sync requests go
  ansible.builtin.debug:
    msg: "{{ (matrix_workers | mxedge.matrix.synapse_worker_pools(matrix_worker_hosts) | selectattr('class', 'equalto', 'sync') | first).servers }}"
"""

RETURN = r"""
_value:
  description: Items with C(class), C(pool), C(workers), C(sticky), C(methods), C(listeners), C(patterns), C(servers).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.synapse_workers import worker_pools


def synapse_worker_pools(workers, addresses):
    """Return the route table's worker pools of ``workers``."""
    try:
        return worker_pools(list(workers or []), dict(addresses or {}))
    except (KeyError, TypeError, ValueError) as error:
        raise AnsibleFilterError("synapse_worker_pools: %s (check matrix_workers first)" % error) from None


class FilterModule:
    """mxedge.matrix.synapse_worker_pools"""

    def filters(self):
        return {"synapse_worker_pools": synapse_worker_pools}
