"""plugins/modules/federation_check.py: argument handling, exit/fail, check mode, with fake network."""

import json

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import federation as fed
from ansible_collections.mxedge.matrix.plugins.module_utils.federation import HttpResponse
from ansible_collections.mxedge.matrix.plugins.module_utils.federation_dns import DnsAnswer
from ansible_collections.mxedge.matrix.plugins.modules import federation_check


class Resolver:
    def __init__(self, nameservers=None, timeout=5.0):
        Resolver.made = (nameservers, timeout)

    def srv(self, name):
        return DnsAnswer("nxdomain")

    def addresses(self, host):
        return DnsAnswer("ok", ["192.0.2.1"]) if host == "example.com" else DnsAnswer("nxdomain", detail="NXDOMAIN")


class Transport:
    responses = {}

    def __init__(self, timeout, ca_path, validate_certs):
        Transport.made = (timeout, ca_path, validate_certs)

    def handshake(self, address, port, sni):
        return {"version": "TLSv1.3"}

    def request(self, address, port, sni, host_header, path):
        if (sni, port, path) in self.responses:
            return self.responses[(sni, port, path)]
        raise fed.TransportError("refused", "connection refused")


@pytest.fixture
def run(monkeypatch, run_module):
    """run(args, responses, resolver=Resolver): the module with fake DNS and HTTPS."""

    def run_with(args, responses, resolver=Resolver):
        monkeypatch.setattr(federation_check, "SystemResolver", resolver)
        monkeypatch.setattr(federation_check, "HttpsTransport", Transport)
        monkeypatch.setattr(Transport, "responses", responses)
        return run_module(federation_check, args)

    return run_with


def version_only():
    return {("example.com", 8448, "/_matrix/federation/v1/version"):
            HttpResponse(200, {}, json.dumps({"server": {"name": "Synapse", "version": "1"}}).encode())}


@pytest.mark.parametrize("check_mode", [False, True])
def test_passes_and_never_changes(run, monkeypatch, check_mode):
    done = run({"server_name": "example.com", "checks": ["version"], "_ansible_check_mode": check_mode},
               version_only())
    assert not done.failed, done.result["msg"]
    assert done.result["changed"] is False and done.result["passed"] is True
    assert (done.result["method"], done.result["host"], done.result["port"]) == ("fallback", "example.com", 8448)
    assert done.result["msg"].startswith("federation checks passed for example.com")


def test_failure_is_readable(run, monkeypatch):
    done = run({"server_name": "example.com", "checks": ["version", "key"]}, version_only())
    assert done.failed
    assert done.result["msg"].startswith("federation check failed for example.com -> example.com:8448 (fallback")
    assert "key [192.0.2.1:8448]: GET /_matrix/key/v2/server: connection refused" in done.result["msg"]
    assert done.result["failed_checks"] == ["key (192.0.2.1:8448)"]
    assert done.result["changed"] is False


def test_options_reach_resolver_and_transport(run, monkeypatch, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("")
    run({"server_name": "example.com", "checks": ["version"], "ca_path": str(ca_file), "validate_certs": False,
         "nameservers": ["192.0.2.53"], "timeout": 30}, version_only())
    assert Resolver.made == (["192.0.2.53"], 5)
    assert Transport.made == (30, str(ca_file), False)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"server_name": "https://example.com"}, "is not a Matrix server name"),
        ({"server_name": "example.com", "timeout": 0}, "timeout must be at least 1"),
        ({"server_name": "example.com", "ca_path": "/nonexistent/ca.pem"}, "ca_path /nonexistent/ca.pem is not a file"),
        ({"server_name": "example.com", "checks": ["bogus"]}, "value of checks must be one or more of"),
        ({}, "missing required arguments: server_name"),
    ],
)
def test_bad_arguments(run, monkeypatch, args, words):
    done = run(args, {})
    assert done.failed and words in done.result["msg"], done.result["msg"]


@pytest.mark.parametrize(
    ("missing", "checks", "words"),
    [
        ("HAS_DNSPYTHON", ["version"], "Failed to import the required Python library (dnspython)"),
        ("HAS_CRYPTOGRAPHY", ["version", "key"], "Failed to import the required Python library (cryptography)"),
    ],
)
def test_missing_library_fails_with_missing_required_lib(run, monkeypatch, missing, checks, words):
    monkeypatch.setattr(federation_check, missing, False)
    done = run({"server_name": "example.com", "checks": checks}, version_only())
    assert done.failed and done.result["msg"].startswith(words), done.result["msg"]
    package = "python3-dnspython" if missing == "HAS_DNSPYTHON" else "python3-cryptography"
    assert package in done.result["msg"] and "delegate_to: localhost" in done.result["msg"]
    assert "exception" in done.result


def test_cryptography_only_needed_for_the_key_check(run, monkeypatch):
    monkeypatch.setattr(federation_check, "HAS_CRYPTOGRAPHY", False)
    done = run({"server_name": "example.com", "checks": ["version"]}, version_only())
    assert not done.failed, done.result["msg"]


def test_bad_nameserver_is_refused(run, monkeypatch):
    done = run({"server_name": "example.com", "nameservers": ["ns.example.com"]}, {},
               resolver=fed.SystemResolver)
    assert done.failed and done.result["msg"] == "nameservers: nameserver 'ns.example.com': 'ns.example.com' is not an IP address"


def test_documentation_parses_and_matches_argument_spec():
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(federation_check.DOCUMENTATION)
    assert set(doc["options"]) == {"server_name", "checks", "ca_path", "validate_certs", "nameservers", "timeout"}
    assert doc["options"]["checks"]["choices"] == list(fed.CHECKS)
    assert [line.split()[0] for line in doc["requirements"]] == ["cryptography", "dnspython"]
    assert doc["attributes"] == {
        "check_mode": {"support": "full", "details": ["The module only reads; the checks run in check mode too."]},
        "diff_mode": {"support": "none"},
        "platform": {"platforms": "posix"},
    }
    assert doc["extends_documentation_fragment"] == ["ansible.builtin.action_common_attributes"]
    yaml.safe_load(federation_check.EXAMPLES)
    yaml.safe_load(federation_check.RETURN)
