# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.synapse_workers_problems (logic in module_utils/synapse_workers.py)."""

DOCUMENTATION = r"""
name: synapse_workers_problems
version_added: 0.1.0
short_description: What a matrix_workers list breaks, one message per rule, each naming the variable
description:
  - Returns the problems of a C(matrix_workers) list; empty when it is usable. Checked are the keys of each
    worker, its name (unique), type (one Synapse has), host (one of O(hosts)), port (unique per host, not the
    main process's), a stream writer's streams (each stream Synapse allows one writer for, written once), the
    types Synapse runs once, and that workers have PostgreSQL and Redis.
positional: hosts
options:
  _input:
    description: The C(matrix_workers) list.
    type: raw
    required: true
  hosts:
    description: The hosts workers may be placed on (the keys of C(matrix_worker_hosts)).
    type: list
    elements: str
    required: true
  database:
    description: C(homeserver_database); workers need C(postgresql).
    type: str
    default: postgresql
  redis:
    description: Whether the workers have a Redis.
    type: bool
    default: true
  main_ports:
    description: C([host, port]) pairs the main process listens on.
    type: list
    elements: list
    default: []
"""

EXAMPLES = r"""
- name: Assert matrix_workers is usable
  ansible.builtin.assert:
    that: __problems | length == 0
    fail_msg: "{{ __problems | join('; ') }}"
  vars:
    __problems: "{{ matrix_workers | mxedge.matrix.synapse_workers_problems(matrix_worker_hosts.keys() | list) }}"
"""

RETURN = r"""
_value:
  description: One message per problem.
  type: list
  elements: string
"""

from ansible_collections.mxedge.matrix.plugins.module_utils.synapse_workers import check_workers


def synapse_workers_problems(workers, hosts, database="postgresql", redis=True, main_ports=()):
    """Return the problems of ``workers`` (strings)."""
    return check_workers(workers, list(hosts or []), database=database, redis=redis,
                         main_ports=[tuple(pair) for pair in main_ports or []])


class FilterModule:
    """mxedge.matrix.synapse_workers_problems"""

    def filters(self):
        return {"synapse_workers_problems": synapse_workers_problems}
