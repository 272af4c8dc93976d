# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.synapse_worker_layout (logic in module_utils/synapse_workers.py)."""

DOCUMENTATION = r"""
name: synapse_worker_layout
version_added: 0.1.0
short_description: A named layout of Synapse workers, as a matrix_workers list
description:
  - C(one_of_each) is one worker of every type Synapse has, one stream writer for the C(events) stream and one for
    all the others. C(readers) is O(sync) sync workers, O(federation_readers) federation readers, one inbound
    federation worker and one client reader.
  - Workers are placed round-robin on O(hosts), ports counting up from O(base_port) on each host.
positional: hosts
options:
  _input:
    description: The layout, C(one_of_each) or C(readers).
    type: str
    required: true
  hosts:
    description: The inventory hosts to place workers on (keys of C(matrix_worker_hosts)).
    type: list
    elements: str
    required: true
  sync:
    description: Sync workers of the C(readers) layout, 1-64.
    type: int
    default: 2
  federation_readers:
    description: Federation readers of the C(readers) layout, 1-64.
    type: int
    default: 2
  base_port:
    description: The first worker port on each host.
    type: int
    default: 18101
"""

EXAMPLES = r"""
# group_vars/all.yml
matrix_worker_hosts: {hs1: 10.0.0.11, hs2: 10.0.0.12}
matrix_workers: "{{ 'readers' | mxedge.matrix.synapse_worker_layout(['hs1', 'hs2'], sync=4) }}"
"""

RETURN = r"""
_value:
  description: The C(matrix_workers) list.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.synapse_workers import WorkerError, expand_layout


def synapse_worker_layout(layout, hosts, sync=2, federation_readers=2, base_port=18101):
    """Return the ``matrix_workers`` list of ``layout``."""
    try:
        return expand_layout(layout, list(hosts or []), sync=sync, federation_readers=federation_readers,
                             base_port=base_port)
    except WorkerError as error:
        raise AnsibleFilterError("synapse_worker_layout: %s" % error) from None


class FilterModule:
    """mxedge.matrix.synapse_worker_layout"""

    def filters(self):
        return {"synapse_worker_layout": synapse_worker_layout}
