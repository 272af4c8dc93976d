# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.srv_records (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: srv_records
version_added: 0.1.0
short_description: Zone-file SRV lines that delegate Matrix federation
description:
  - Returns the DNS zone-file lines that delegate federation for a server name with SRV
    records, C(_matrix-fed._tcp.<server_name>. <ttl> IN SRV <priority> <weight> <port> <target>.),
    and with O(legacy=true) also the deprecated C(_matrix._tcp) twin (read by homeservers
    that predate Matrix 1.8).
  - Names are written with a trailing dot (absolute); give them without one.
  - Homeservers look SRV records up only for server names that are DNS names without an explicit
    port, and only when C(/.well-known/matrix/server) does not answer; an IP literal or a port
    in O(_input) is therefore an error.
  - Invalid input fails the task with an error naming the filter, the argument and the rule.
positional: target, port
options:
  _input:
    description:
      - The Matrix server name (the part after C(:) in user IDs); a DNS name without port or
        trailing dot (punycode for internationalised names).
    type: string
    required: true
  target:
    description: Host that answers federation traffic; a DNS name without port or trailing dot.
    type: string
    required: true
  port:
    description: TLS port of the federation listener on O(target), 1-65535.
    type: integer
    required: true
  ttl:
    description: Time to live of the records in seconds, 0-2147483647.
    type: integer
    default: 3600
  priority:
    description: SRV priority, 0-65535.
    type: integer
    default: 10
  weight:
    description: SRV weight, 0-65535.
    type: integer
    default: 5
  legacy:
    description: Also return the deprecated C(_matrix._tcp) record (second line).
    type: boolean
    default: false
seealso:
  - plugin: mxedge.matrix.well_known_server
    plugin_type: filter
  - name: Matrix server-server API, resolving server names
    description: When homeservers consult SRV records.
    link: https://spec.matrix.org/latest/server-server-api/#resolving-server-names
"""

EXAMPLES = r"""
- name: Show the records to add to the example.com zone
  ansible.builtin.debug:
    msg: "{{ 'example.com' | mxedge.matrix.srv_records('matrix.example.com', 8448) }}"
# ['_matrix-fed._tcp.example.com. 3600 IN SRV 10 5 8448 matrix.example.com.']

- name: Write them, with the legacy twin, into a zone snippet
  ansible.builtin.copy:
    content: |
      {% for line in matrix_server_name | mxedge.matrix.srv_records(matrix_homeserver_fqdn, 443, ttl=300, legacy=true) %}
      {{ line }}
      {% endfor %}
    dest: /etc/bind/matrix-srv.zone.inc
    mode: "0644"
"""

RETURN = r"""
_value:
  description: Zone-file lines, without line terminators; one, or two with O(legacy=true).
  type: list
  elements: string
  sample:
    - _matrix-fed._tcp.example.com. 3600 IN SRV 10 5 8448 matrix.example.com.
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    MatrixNameError,
    srv_record_lines,
)


def srv_records(server_name, target, port, ttl=3600, priority=10, weight=5, legacy=False):
    """Return the SRV zone-file lines for Matrix federation delegation."""
    try:
        return srv_record_lines(
            server_name, target, port, ttl=ttl, priority=priority, weight=weight, legacy=legacy
        )
    except MatrixNameError as error:
        raise AnsibleFilterError("srv_records: %s" % error) from None


class FilterModule:
    """mxedge.matrix.srv_records"""

    def filters(self):
        return {"srv_records": srv_records}
