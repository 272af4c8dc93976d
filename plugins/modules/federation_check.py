#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Module mxedge.matrix.federation_check (logic in module_utils/federation.py)."""

DOCUMENTATION = r"""
module: federation_check
version_added: 0.1.0
short_description: Check that a Matrix homeserver is reachable over federation, as other servers find it
description:
  - Resolves a Matrix server name the way the Matrix server-server specification
    ("Resolving server names", v1.8 and later) tells homeservers to, and records every step
    taken (IP literal; explicit port; C(https://<hostname>/.well-known/matrix/server)
    (redirects followed, at most 5, loops refused; C(Cache-Control) and C(Expires) reported);
    the SRV record C(_matrix-fed._tcp.<hostname>), then the deprecated C(_matrix._tcp.<hostname>);
    and the fallback to port 8448). A delegated name from the well-known document goes through
    the IP literal, port and SRV steps again, as the specification says.
  - It also works out which certificate name each path requires (the IP for IP literals, the
    delegated host name after well-known delegation, the server name itself for SRV records and
    the fallback) and which C(Host) header to send.
  - Then, for every address the resolved host has, it runs the selected I(checks)
    (TLS handshake with that SNI and certificate verification, the signing keys at
    C(/_matrix/key/v2/server) with their self-signature verified, C(/_matrix/federation/v1/version),
    a request whose path holds C(%2F)), plus the CORS header of C(https://<hostname>/.well-known/matrix/client).
  - The well-known document counts as failed when it is served but invalid (not JSON, no valid
    C(m.server), a redirect loop, an HTTP status other than 200, 404 or 410), although homeservers
    then fall through to SRV as the specification says. No answer at all (connection refused, time-out,
    no address) means "no delegation" and passes, with a warning for a time-out.
  - An SRV lookup that fails (SERVFAIL, time-out), or a lone SRV record with target C(.) (RFC 2782
    "service not available"), fails the C(srv) check and ends the resolution there, with no
    fallback to port 8448, because that is where Synapse stops too.
  - The task fails with a readable summary of the failed checks; the full result is returned
    either way. The module only reads, so it runs in check mode too and never reports a change.
  - Signatures are verified with the Python library C(cryptography) (Ed25519) and DNS is resolved
    with C(dnspython) (SRV records always; A and AAAA records too when I(nameservers) is given,
    otherwise through the system resolver); both must be installed where the module runs.
  - "What an operator wants to know is whether other servers reach the homeserver, so run it with the
    view from outside, like a federating server has: by default on the controller
    (C(delegate_to: localhost)), or on another host that federates with the server."
requirements:
  - cryptography (for the C(key) check)
  - dnspython
author:
  - mxedge developers (@mxedge)
options:
  server_name:
    description:
      - The Matrix server name to check, C(host[:port]), as in user IDs (C(@alice:example.com)).
      - C(host) is a DNS name, an IPv4 literal or an IPv6 literal in square brackets.
    type: str
    required: true
  checks:
    description:
      - Which checks to run against the resolved server. The resolution checks (the well-known
        document, the addresses) always run.
      - C(tls) the TLS handshake with SNI and certificate verification for the required name.
      - C(key) C(GET /_matrix/key/v2/server) answers with C(server_name) equal to I(server_name),
        C(valid_until_ts) in the future, at least one ed25519 key in C(verify_keys), and every
        signature of I(server_name) by those keys verifies.
      - C(version) C(GET /_matrix/federation/v1/version) answers with C(server.name).
      - C(encoded_slash) a path holding C(%2F) reaches the homeserver undecoded (a reverse proxy that
        decodes it breaks room aliases and other IDs with C(/)). The probe asks for the key document
        with a key ID holding C(%2F), which Synapse answers only when the slash arrives encoded;
        a server that does not answer key-ID requests at all makes the probe inconclusive (skipped).
      - C(client_well_known) when C(https://<hostname>/.well-known/matrix/client) exists, it has
        the header C(Access-Control-Allow-Origin) with the value C(*), and C(m.homeserver.base_url).
        Skipped when nothing answers or the answer is 404 or 410; a certificate that does not verify,
        a broken redirect or HTTP exchange, or another status fails it.
    type: list
    elements: str
    choices: [tls, key, version, encoded_slash, client_well_known]
    default: [tls, key, version, encoded_slash, client_well_known]
  ca_path:
    description:
      - PEM file of the certificate authorities to trust instead of the system's, for private CAs.
    type: path
  validate_certs:
    description:
      - Verify certificates and their names. Switching it off also makes the C(tls) check meaningless;
        other homeservers verify.
    type: bool
    default: true
  nameservers:
    description:
      - Nameservers to ask (addresses, optionally C(address#port) or C([v6]:port)) instead of those in
        C(/etc/resolv.conf). When given, A and AAAA records are looked up there too; otherwise host
        names resolve through the system resolver (C(/etc/hosts) included).
    type: list
    elements: str
  timeout:
    description:
      - Seconds to wait for each connection and request. A DNS query through dnspython
        (SRV, and every lookup with I(nameservers)) waits at most 5 seconds per attempt, and a lookup
        gives up after two rounds over the nameservers. Address lookups through the system resolver
        follow its own time-outs (C(/etc/resolv.conf)).
    type: int
    default: 10
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads; the checks run in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The module never reports C(changed).
  - On Debian and Ubuntu the requirements are the packages C(python3-cryptography) and C(python3-dnspython);
    elsewhere C(pip install cryptography dnspython) into the Python that runs the module.
seealso:
  - name: Matrix server-server API, resolving server names
    description: The resolution algorithm this module follows.
    link: https://spec.matrix.org/latest/server-server-api/#resolving-server-names
  - name: Matrix server-server API, retrieving server keys
    description: The key document the C(key) check validates.
    link: https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys
  - plugin: mxedge.matrix.well_known_server
    plugin_type: filter
  - plugin: mxedge.matrix.srv_records
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Check federation of our own server after deploying it, from the controller (the view from outside)
  mxedge.matrix.federation_check:
    server_name: example.com
  delegate_to: localhost

- name: Check from another homeserver, trusting a private CA
  mxedge.matrix.federation_check:
    server_name: example.test
    ca_path: /usr/local/share/ca-certificates/mxedge-test-ca.crt
  delegate_to: other-homeserver.example.net

- name: Only discovery and keys, asking a given nameserver
  mxedge.matrix.federation_check:
    server_name: example.com
    checks: [tls, key]
    nameservers: [192.0.2.53]
    timeout: 5
  delegate_to: localhost
  register: federation

- name: Show where other servers connect
  ansible.builtin.debug:
    msg: "{{ federation.host }}:{{ federation.port }} via {{ federation.method }}"

- name: Record failures without failing the play
  mxedge.matrix.federation_check:
    server_name: example.com
  delegate_to: localhost
  register: federation
  failed_when: false

- name: Assert the well-known delegation is in place
  ansible.builtin.assert:
    that:
      - federation.method == 'well_known_explicit_port'
      - federation.host == 'matrix.example.com'
      - federation.checks | rejectattr('passed') | list | length == 0
"""

RETURN = r"""
server_name:
  description: The server name checked.
  returned: always
  type: str
  sample: example.com
method:
  description:
    - How the server name resolved. One of C(ip_literal), C(explicit_port), C(well_known_ip_literal),
      C(well_known_explicit_port), C(well_known_srv), C(well_known_srv_deprecated), C(well_known_fallback),
      C(srv), C(srv_deprecated), C(fallback); C(srv_error) or C(well_known_srv_error) when an SRV lookup
      failed or declared the service unavailable (no targets then).
  returned: when the server name is valid
  type: str
  sample: well_known_explicit_port
host:
  description: The host (DNS name or IP) other servers connect to; the first SRV target when there are several.
  returned: when the server name is valid
  type: str
  sample: matrix.example.com
port:
  description: The port other servers connect to.
  returned: when the server name is valid
  type: int
  sample: 443
cert_name:
  description: The name (or IP address) the server's certificate must be valid for; also the SNI sent.
  returned: when the server name is valid
  type: str
  sample: matrix.example.com
host_header:
  description: The C(Host) header other servers send.
  returned: when the server name is valid
  type: str
  sample: matrix.example.com:443
targets:
  description: Every place the resolution leads to (several for SRV records), in the order servers try them.
  returned: when the server name is valid
  type: list
  elements: dict
  contains:
    host:
      description: Host name or IP address.
      type: str
    port:
      description: Port.
      type: int
    cert_name:
      description: Name the certificate must be valid for.
      type: str
    host_header:
      description: C(Host) header to send.
      type: str
    via:
      description: The resolution step that produced it (see RV(method)).
      type: str
  sample: [{"host": "matrix.example.com", "port": 443, "cert_name": "matrix.example.com",
            "host_header": "matrix.example.com:443", "via": "well_known_explicit_port"}]
addresses:
  description: The addresses checked, C(address:port) (IPv6 in brackets).
  returned: when the server name is valid
  type: list
  elements: str
  sample: ["192.0.2.10:443", "[2001:db8::10]:443"]
steps:
  description:
    - The resolution steps in the order taken, each with C(step) (C(ip_literal), C(explicit_port),
      C(well_known), C(srv), C(addresses), ...), C(outcome) and step details (C(url), C(name),
      C(records), C(m_server), C(detail), ...).
  returned: when the server name is valid
  type: list
  elements: dict
  sample:
    - {"step": "well_known", "outcome": "delegated", "url": "https://example.com/.well-known/matrix/server",
       "m_server": "matrix.example.com:443", "redirects": [], "cache_control": "max-age=3600", "expires": null}
    - {"step": "well_known_explicit_port", "outcome": "used", "host": "matrix.example.com", "port": 443}
well_known:
  description: What C(https://<hostname>/.well-known/matrix/server) answered; null when the step did not apply.
  returned: when the server name is valid
  type: dict
  contains:
    url:
      description: The URL requested first.
      type: str
    status:
      description: HTTP status of the final response (null when nothing answered).
      type: int
    redirects:
      description: URLs redirected to, in order.
      type: list
      elements: str
    cache_control:
      description: The C(Cache-Control) header of the final response.
      type: str
    expires:
      description: The C(Expires) header of the final response.
      type: str
    m_server:
      description: The delegation target, when valid.
      type: str
    error:
      description: Why the document was not used, when it was not.
      type: str
checks:
  description: Every check run, in order.
  returned: when the server name is valid
  type: list
  elements: dict
  contains:
    name:
      description: C(well_known_server), C(srv), C(addresses), C(tls), C(key), C(version), C(encoded_slash) or C(client_well_known).
      type: str
    passed:
      description: Whether the check passed.
      type: bool
    reason:
      description: What was found, in words.
      type: str
    address:
      description: The address (C(address:port)) of a per-address check; null otherwise.
      type: str
    skipped:
      description: True when the check did not apply (for example no client well-known document).
      type: bool
  sample:
    - {"name": "tls", "passed": true, "reason": "TLSv1.3, certificate valid for matrix.example.com",
       "address": "192.0.2.10:443", "skipped": false}
failed_checks:
  description: Names (with address) of the checks that failed.
  returned: when the server name is valid
  type: list
  elements: str
  sample: ["encoded_slash (192.0.2.10:443)"]
passed:
  description: True when every check passed.
  returned: when the server name is valid
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.mxedge.matrix.plugins.module_utils.federation import (
    CHECKS,
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    HttpsTransport,
    SystemResolver,
    run_checks,
    summary,
)
from ansible_collections.mxedge.matrix.plugins.module_utils.federation_dns import DNSPYTHON_IMPORT_ERROR, HAS_DNSPYTHON
from ansible_collections.mxedge.matrix.plugins.module_utils.matrix_names import MatrixNameError


def fail_missing_library(module, library, debian_package, reason, import_error):
    module.fail_json(
        msg="%s Install %s (Debian, Ubuntu) or `pip install %s`, or run the task on the controller with "
            "delegate_to: localhost where it is installed." % (
                missing_required_lib(library, reason=reason), debian_package, library),
        exception=import_error)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            server_name=dict(type="str", required=True),
            checks=dict(type="list", elements="str", choices=list(CHECKS), default=list(CHECKS)),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            nameservers=dict(type="list", elements="str"),
            timeout=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not HAS_DNSPYTHON:
        fail_missing_library(module, "dnspython", "python3-dnspython", "to resolve SRV records", DNSPYTHON_IMPORT_ERROR)
    if "key" in params["checks"] and not HAS_CRYPTOGRAPHY:
        fail_missing_library(module, "cryptography", "python3-cryptography", "to verify the signing keys (the key check)",
                             CRYPTOGRAPHY_IMPORT_ERROR)
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second, got %d" % params["timeout"])
    if params["ca_path"] and not os.path.isfile(params["ca_path"]):
        module.fail_json(msg="ca_path %s is not a file on the host the module runs on" % params["ca_path"])
    try:
        resolver = SystemResolver(params["nameservers"], timeout=min(params["timeout"], 5))
    except ValueError as error:
        module.fail_json(msg="nameservers: %s" % error)
    transport = HttpsTransport(params["timeout"], params["ca_path"], params["validate_certs"])
    try:
        result = run_checks(params["server_name"], resolver, transport, params["checks"])
    except MatrixNameError as error:
        module.fail_json(msg="server_name %r is not a Matrix server name: %s" % (params["server_name"], error))
    for warning in result.pop("warnings"):
        module.warn(warning)
    if not result["passed"]:
        module.fail_json(msg=summary(result), changed=False, **result)
    module.exit_json(msg=summary(result), changed=False, **result)


if __name__ == "__main__":
    main()
