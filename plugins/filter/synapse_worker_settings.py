# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.synapse_worker_settings (logic in module_utils/synapse_workers.py)."""

DOCUMENTATION = r"""
name: synapse_worker_settings
version_added: 0.1.0
short_description: The Synapse settings one host of a worker deployment needs
description:
  - For a checked C(matrix_workers) list and one inventory host, returns the settings shared by every Synapse
    process (C(instance_map), C(stream_writers), C(redis), the replication secret's file and the types moved off
    the main process), the main process's replication listener (on the host that runs it), and the workers placed
    on the host with their configuration files (C(docs/workers.md)).
  - Internal to the homeserver role.
positional: host, runs_main, main_address, replication_port, addresses, bind_addresses, config_dir, log_dir
options:
  _input:
    description: The C(matrix_workers) list.
    type: list
    elements: dict
    required: true
  host:
    description: The inventory host.
    type: str
    required: true
  runs_main:
    description: Whether the host runs the main process.
    type: bool
    required: true
  main_address:
    description: Where the workers reach the main process's replication listener.
    type: str
    required: true
  replication_port:
    description: The main process's replication port.
    type: int
    required: true
  addresses:
    description: Inventory host to its private address (C(matrix_worker_hosts)).
    type: dict
    required: true
  bind_addresses:
    description: The addresses the listeners bind.
    type: list
    elements: str
    required: true
  config_dir:
    description: Synapse's configuration directory.
    type: str
    required: true
  log_dir:
    description: Synapse's log directory.
    type: str
    required: true
  redis:
    description: C(host), C(port) and C(password_path) of the Redis every process replicates through.
    type: dict
  replication_secret_path:
    description: The file holding C(worker_replication_secret).
    type: str
  request_id_header:
    description: The request ID header the proxy sets.
    type: str
"""

EXAMPLES = r"""
- name: Show the workers of this host
  ansible.builtin.debug:
    msg: >-
      {{ (matrix_workers | mxedge.matrix.synapse_worker_settings(inventory_hostname, true, '10.0.0.11', 9093,
          matrix_worker_hosts, ['10.0.0.11'], '/etc/synapse', '/var/log/synapse')).workers | map(attribute='name') }}
"""

RETURN = r"""
_value:
  description: C(shared) (dict), C(listeners) (list) and C(workers) (list of dicts).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.synapse_workers import WorkerError, host_settings


def synapse_worker_settings(workers, host, runs_main, main_address, replication_port, addresses, bind_addresses,
                            config_dir, log_dir, redis=None, replication_secret_path=None, request_id_header=None):
    """Return the worker settings of ``host``."""
    try:
        return host_settings(list(workers or []), host, bool(runs_main), main_address, int(replication_port),
                             dict(addresses or {}), list(bind_addresses), config_dir, log_dir, redis=redis,
                             replication_secret_path=replication_secret_path, request_id_header=request_id_header)
    except (KeyError, TypeError, WorkerError) as error:
        raise AnsibleFilterError("synapse_worker_settings: %s (check matrix_workers first)" % error) from None


class FilterModule:
    """mxedge.matrix.synapse_worker_settings"""

    def filters(self):
        return {"synapse_worker_settings": synapse_worker_settings}
