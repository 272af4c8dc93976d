# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.well_known_server (logic in module_utils/matrix_names.py)."""

DOCUMENTATION = r"""
name: well_known_server
version_added: 0.1.0
short_description: Body of C(/.well-known/matrix/server) as canonical JSON text
description:
  - Returns the JSON text a server name's C(https://<server_name>/.well-known/matrix/server)
    answers with, C({"m.server":"<server_target>"}), to delegate federation to another host or port.
  - The text is canonical (sorted keys, no whitespace, ASCII only, no trailing newline), so every
    proxy flavour serves the same bytes and tests can compare them byte for byte.
  - The input is validated against the Matrix specification's server name grammar
    (appendix "Server Name") and the conventional host name rules it refers to.
    Invalid input fails the task with an error naming the filter, the argument and the rule.
options:
  _input:
    description:
      - The delegation target C(host[:port]). C(host) is a DNS name (letters, digits, C(-) and C(.),
        at most 255 characters, labels of 1-63 characters not starting or ending with C(-),
        no trailing dot), a dotted-quad IPv4 literal (octets 0-255, no leading zeros) or an IPv6
        literal in square brackets (no zone index). C(port) is 1-65535 without leading zeros.
      - Internationalised names must be given in punycode (C(xn--...)).
      - Letters keep their case; nothing is normalised.
    type: string
    required: true
seealso:
  - plugin: mxedge.matrix.well_known_client
    plugin_type: filter
  - plugin: mxedge.matrix.srv_records
    plugin_type: filter
  - plugin: mxedge.matrix.server_name
    plugin_type: test
  - name: Matrix server-server API, resolving server names
    description: How homeservers use C(/.well-known/matrix/server).
    link: https://spec.matrix.org/latest/server-server-api/#resolving-server-names
"""

EXAMPLES = r"""
- name: Delegate example.com to matrix.example.com on port 443
  ansible.builtin.copy:
    content: "{{ 'matrix.example.com:443' | mxedge.matrix.well_known_server }}"
    dest: /var/www/example.com/.well-known/matrix/server
    mode: "0644"
# content is {"m.server":"matrix.example.com:443"}

- name: Build the body from variables
  ansible.builtin.set_fact:
    well_known_server_body: >-
      {{ (matrix_homeserver_fqdn ~ ':' ~ matrix_federation_port) | mxedge.matrix.well_known_server }}

- name: IPv6 literals go in brackets
  ansible.builtin.debug:
    msg: "{{ '[2001:db8::1]:8448' | mxedge.matrix.well_known_server }}"
# msg is {"m.server":"[2001:db8::1]:8448"}
"""

RETURN = r"""
_value:
  description: Canonical JSON text C({"m.server":"<input>"}) with no trailing newline.
  type: string
  sample: '{"m.server":"matrix.example.com:443"}'
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import (
    MatrixNameError,
    well_known_server_body,
)


def well_known_server(server_target):
    """Return the canonical JSON body of /.well-known/matrix/server."""
    try:
        return well_known_server_body(server_target)
    except MatrixNameError as error:
        raise AnsibleFilterError("well_known_server: %s" % error) from None


class FilterModule:
    """mxedge.matrix.well_known_server"""

    def filters(self):
        return {"well_known_server": well_known_server}
