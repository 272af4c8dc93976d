# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.caddy_canonical_config (logic in module_utils/caddy_config.py)."""

DOCUMENTATION = r"""
name: caddy_canonical_config
version_added: 0.2.0
short_description: A Caddy JSON configuration in a form that compares equal when only Caddy's random list order differs
description:
  - Takes the JSON that C(caddy adapt) prints or Caddy's admin endpoint (C(/config/)) returns and sorts the lists
    Caddy's adapter fills in random order (a server's C(logs.skip_hosts), a C(file_server)'s C(hide)).
  - Everything else is returned as it is; routes, handlers and matchers keep their order.
  - The caddy role compares the running configuration with the Caddyfile's this way and reloads Caddy only when
    they really differ.
options:
  _input:
    description: The configuration (JSON text, or parsed). Empty text is an empty configuration.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Reload Caddy when it runs something other than the Caddyfile
  ansible.builtin.debug:
    msg: The running configuration differs from the Caddyfile.
  when: >-
    (__running.json | mxedge.matrix.caddy_canonical_config)
    != (__adapted.stdout | mxedge.matrix.caddy_canonical_config)
  changed_when: true
"""

RETURN = r"""
_value:
  description: The configuration, its unordered lists sorted.
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.caddy_config import CaddyConfigError, canonical


def caddy_canonical_config(config):
    """Return ``config`` with Caddy's unordered lists sorted."""
    try:
        return canonical(config)
    except CaddyConfigError as error:
        raise AnsibleFilterError("caddy_canonical_config: %s" % error) from None


class FilterModule:
    """mxedge.matrix.caddy_canonical_config"""

    def filters(self):
        return {"caddy_canonical_config": caddy_canonical_config}
