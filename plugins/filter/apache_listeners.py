# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filters mxedge.matrix.apache_listeners and mxedge.matrix.apache_listen_ports (logic in module_utils/apache_config.py)."""

DOCUMENTATION = r"""
name: apache_listeners
version_added: 0.2.0
short_description: The operator's Apache virtual hosts, from what apache2ctl -S prints
description:
  - Turns the output of C(apache2ctl -S) into the operator's listeners that M(mxedge.matrix.alongside_conflicts)
    compares with the route table, one per virtual host and address, leaving out the role's own files.
  - The companion filter C(mxedge.matrix.apache_listen_ports) reads the ports of the C(Listen) directives from
    C(grep -Hn) lines (C(path:line:Listen args)) of the files Apache includes, also leaving out the role's own files.
options:
  _input:
    description: The standard output of C(apache2ctl -S) (for C(apache_listen_ports), the C(grep -Hn) lines).
    type: str
    required: true
  own_paths:
    description: Files and directories (ending in C(/)) of the role's own; virtual hosts and C(Listen) lines in them are left out.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Stop when the Matrix virtual hosts would collide with the operator's
  ansible.builtin.assert:
    that: __conflicts | length == 0
    fail_msg: "{{ __conflicts | join(' ') }}"
  vars:
    __conflicts: "{{ __dump.stdout | mxedge.matrix.apache_listeners(['/etc/apache2/sites-enabled/mxedge-matrix.conf'])
                     | mxedge.matrix.alongside_conflicts(_matrix_routes) }}"
"""

RETURN = r"""
_value:
  description: C(apache_listeners) a list of dicts with C(port), C(names), C(default), C(where) (C(path:line)) and
    C(address); C(apache_listen_ports) a sorted list of port numbers.
  type: list
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mxedge.matrix.plugins.module_utils.apache_config import listen_ports, listeners


def _text(value, name):
    if not isinstance(value, str):
        raise AnsibleFilterError("%s: the input must be the text Apache printed, got %s" % (name, type(value).__name__))
    return value


def apache_listeners(text, own_paths=None):
    """The operator's virtual hosts in ``apache2ctl -S`` output."""
    return listeners(_text(text, "apache_listeners"), list(own_paths or []))


def apache_listen_ports(text, own_paths=None):
    """The ports of the operator's ``Listen`` directives."""
    return listen_ports(_text(text, "apache_listen_ports"), list(own_paths or []))


class FilterModule:
    """mxedge.matrix.apache_listeners, mxedge.matrix.apache_listen_ports"""

    def filters(self):
        return {"apache_listeners": apache_listeners, "apache_listen_ports": apache_listen_ports}
