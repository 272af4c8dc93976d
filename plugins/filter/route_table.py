# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter mxedge.matrix.route_table (logic in module_utils/matrix_routes.py)."""

DOCUMENTATION = r"""
name: route_table
version_added: 0.2.0
short_description: The proxy contract as data, one ordered route table for every proxy flavour
description:
  - Derives, from the shared facts of the C(mxedge.matrix.matrix) role, the listeners (vhosts) a proxy
    serves, their ordered routes and the upstream pools they forward to. Every proxy role renders
    this one table in its own syntax; no proxy template names a Matrix path.
  - A route has a C(match) (C(prefix) or C(exact) path on the proxy's normalised path, the pattern the
    raw request URI must match too, methods), an C(action) (C(forward) to a named upstream pool, answer a
    C(static) document, C(refuse) with a Matrix error) and a C(policy) (body limit, timeout class,
    stickiness key). The first route that matches answers; the vhost's C(fallback) answers the rest.
  - Each route lists the behaviour IDs of C(docs/contract.md) it implements.
  - Inconsistent tables (a route that can never match, an unknown upstream) fail with an error naming the route.
options:
  _input:
    description:
      - The shared facts, a dict with C(homeserver_flavour), C(homeserver_fqdn), C(server_name_host),
        C(client_port), C(federation_port), C(well_known_placement), C(well_known_port), C(well_known_site)
        (optional, C(own) or C(operator)),
        C(well_known_server_body), C(well_known_client_body), C(admin_allowed_networks), C(max_body_bytes),
        C(homeserver_address), C(homeserver_port), C(homeserver_socket), C(acme), C(acme_challenge_address),
        C(acme_challenge_port), C(http_port), C(https_redirect_port_suffix).
      - The C(mxedge.matrix.matrix) role builds it; operators read the result as C(_matrix_routes).
    type: dict
    required: true
seealso:
  - plugin: mxedge.matrix.well_known_server
    plugin_type: filter
  - plugin: mxedge.matrix.well_known_client
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Show the routes the proxy roles will render
  ansible.builtin.debug:
    msg: "{{ _matrix_routes.vhosts | map(attribute='routes') | flatten | map(attribute='id') | list }}"
"""

RETURN = r"""
_value:
  description: The route table.
  type: dict
  contains:
    vhosts:
      description: Listeners in order (client, federation, well_known, http), each with C(name), C(port),
        C(tls), C(hosts), C(any_host), C(routes), C(fallback) and C(snippet) (true for the well-known vhost that
        the operator's website includes with C(matrix_well_known_site=operator), not a listener of the proxy role's).
      type: list
      elements: dict
    upstreams:
      description: Upstream pools, each with C(name), C(servers), C(health_path), C(balance), C(fallback).
      type: list
      elements: dict
    errors:
      description: The Matrix errors a proxy answers itself, by status (C(errcode), C(error), canonical C(body)).
      type: dict
    ports:
      description: Every TLS port the proxy role listens on (snippet vhosts left out), sorted.
      type: list
      elements: int
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_routes import (
    RouteTableError,
    route_table as _route_table,
)


def route_table(spec):
    """Return the route table for the shared facts in ``spec``."""
    try:
        return _route_table(dict(spec) if hasattr(spec, "keys") else spec)
    except RouteTableError as error:
        raise AnsibleFilterError("route_table: %s" % error) from None


class FilterModule:
    """mxedge.matrix.route_table"""

    def filters(self):
        return {"route_table": route_table}
