# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filters mxedge.matrix.nginx_listeners and nginx_http_includes (logic in module_utils/nginx_config.py)."""

DOCUMENTATION = r"""
name: nginx_listeners
version_added: 0.2.0
short_description: The server blocks of a live nginx configuration, from what nginx -T prints
description:
  - Parses the output of C(nginx -T) (every file nginx read, each after C(# configuration file <path>:)) the way
    nginx does, follows C(include) from the main file, and returns one entry per server block and port, the input
    of M(mxedge.matrix.alongside_conflicts).
  - Server blocks written in a file of O(own_paths) (a file, or a directory and everything under it) are left out.
options:
  _input:
    description: The standard output of C(nginx -T).
    type: str
    required: true
  own_paths:
    description: The role's own files and directories.
    type: list
    elements: str
    default: []
  extra_files:
    description:
      - Files read as if nginx had printed them too, in place of a printed file of the same path (a dict of path to text),
        the configuration as it would be once the role has written them.
    type: dict
    default: {}
seealso:
  - plugin: mxedge.matrix.alongside_conflicts
    plugin_type: filter
"""

EXAMPLES = r"""
- name: The operator's listeners
  ansible.builtin.debug:
    msg: "{{ nginx_dump.stdout | mxedge.matrix.nginx_listeners(['/etc/nginx/conf.d/mxedge-matrix.conf']) }}"
# [{"port": 443, "names": ["example.com"], "default": true, "where": "/etc/nginx/sites-enabled/example.com:1",
#   "close": "/etc/nginx/sites-enabled/example.com:30", "context": "http"}]
"""

RETURN = r"""
_value:
  description:
    - One dict per server block and port, in nginx's order, with C(port), C(names) (lower case, C(*) for the
      catch-all), C(default) (the port's default server), C(where) and C(close) (C(path:line) of the block's opening
      and closing brace) and C(context) (C(http), C(stream) or C(mail)).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.nginx_config import (
    NginxConfigError,
    http_include_covers,
    listeners,
)


def nginx_listeners(text, own_paths=None, extra_files=None):
    """Return the listeners of the configuration ``nginx -T`` printed as ``text``, except ``own_paths``'."""
    try:
        return listeners(str(text), list(own_paths or []), dict(extra_files or {}))
    except NginxConfigError as error:
        raise AnsibleFilterError("nginx_listeners: %s" % error) from None


def nginx_http_includes(text, path):
    """Return whether an include in the http context of the configuration reads ``path``."""
    try:
        return http_include_covers(str(text), str(path))
    except NginxConfigError as error:
        raise AnsibleFilterError("nginx_http_includes: %s" % error) from None


class FilterModule:
    """mxedge.matrix.nginx_listeners, mxedge.matrix.nginx_http_includes"""

    def filters(self):
        return {"nginx_listeners": nginx_listeners, "nginx_http_includes": nginx_http_includes}
