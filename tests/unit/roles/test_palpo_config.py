"""palpo.toml as mxedge.matrix.homeserver renders it, parsed with tomllib.

Palpo cannot be downloaded or built on the test machines, so this is what is
tested for the Palpo flavour: the real role variables and template, rendered by
ansible-playbook on the controller (palpo_render.yml: the matrix role's checks
and derived facts, the homeserver role's preflight, then the template), for a
few variable sets; the result must be valid TOML with Palpo's key names and the
values derived from the shared matrix_* variables. Bad Palpo settings must stop
in preflight with a message naming the variable.
"""

import json
import os
import subprocess
import tempfile
import tomllib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
PLAYBOOK = os.path.join(HERE, "palpo_render.yml")


def _collections_path():
    """The collections tree in which mxedge.matrix is this checkout."""
    parts = ROOT.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "mxedge"] and parts[-1] == "matrix":
        return os.sep.join(parts[:-3]) or os.sep
    cached = os.path.join(ROOT, ".cache", "collections")
    if os.path.realpath(os.path.join(cached, "ansible_collections", "mxedge", "matrix")) == os.path.realpath(ROOT):
        return cached
    temp = tempfile.mkdtemp(prefix="mxedge-palpo-")
    os.makedirs(os.path.join(temp, "ansible_collections", "mxedge"))
    os.symlink(ROOT, os.path.join(temp, "ansible_collections", "mxedge", "matrix"))
    return temp


BASE = {
    "matrix_homeserver_flavour": "palpo",
    "matrix_server_name": "example.test",
    "matrix_tls_certificate": "/dev/null",
    "matrix_tls_certificate_key": "/dev/null",
    "homeserver_database": "postgresql",
    "homeserver_palpo_version": "0.2.0",
    # Any controller file stands in for the binary: only its presence is checked.
    "homeserver_palpo_binary_src": PLAYBOOK,
}


def _render(tmp_path, **extra):
    variables = dict(BASE, palpo_render_dir=str(tmp_path), **extra)
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(variables))
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=_collections_path(),
        ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", PLAYBOOK, "-e", f"@{varfile}"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    rendered = tmp_path / "palpo.toml"
    return proc, rendered


def _config(tmp_path, **extra):
    proc, rendered = _render(tmp_path, **extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = rendered.read_text()
    assert text.startswith("#\n# Ansible managed")
    with rendered.open("rb") as f:
        return tomllib.load(f)


def test_delegated_single_port_with_local_postgresql(tmp_path):
    cfg = _config(tmp_path, matrix_homeserver_fqdn="matrix.example.test", matrix_federation_port=443)
    assert cfg["server_name"] == "example.test"
    assert cfg["max_upload_size"] == 50 * 1048576
    assert cfg["allow_registration"] is False
    assert cfg["listeners"] == [{"address": "127.0.0.1:8008", "x_forwarded": True}]
    # Role-managed PostgreSQL: UNIX socket, peer authentication, no password.
    assert cfg["db"] == {"url": "postgresql:///palpo?user=palpo&host=/var/run/postgresql"}
    assert cfg["storage"] == {"backend": "fs", "root": "/var/lib/palpo/media_store"}
    assert cfg["federation"] == {"enable": True}
    assert cfg["well_known"] == {"server": "matrix.example.test:443", "client": "https://matrix.example.test"}


def test_ports_bind_addresses_and_remote_database(tmp_path):
    cfg = _config(
        tmp_path,
        matrix_server_name="other.test",
        matrix_client_port=8443,
        matrix_homeserver_port=8118,
        matrix_max_upload_size_mb=100,
        homeserver_bind_addresses=["10.1.2.3", "127.0.0.1"],
        homeserver_database_host="db.internal",
        homeserver_database_port=6432,
        homeserver_database_name="palpo_prod",
        homeserver_database_user="palpo_app",
        homeserver_database_password="p@ss/w:rd",
    )
    assert cfg["server_name"] == "other.test"
    assert cfg["max_upload_size"] == 100 * 1048576
    assert cfg["listeners"] == [
        {"address": "10.1.2.3:8118", "x_forwarded": True},
        {"address": "127.0.0.1:8118", "x_forwarded": True},
    ]
    assert cfg["db"]["url"] == "postgresql://palpo_app:p%40ss%2Fw%3Ard@db.internal:6432/palpo_prod"
    assert cfg["well_known"] == {"server": "other.test:8448", "client": "https://other.test:8443"}


def test_extra_config_is_merged_last(tmp_path):
    cfg = _config(
        tmp_path,
        homeserver_extra_config={
            "allow_registration": True,
            "registration_token": 'tok"en\\with specials',
            "new_user_displayname_suffix": "\U0001f495",
            "trusted_servers": [],
            "db": {"pool_size": 20},
            "well_known": {"support_email": "admin@example.test", "client": None},
            "rc_login": {"per_second": 0.5, "burst": 3},
            "proxy": {"global": {"url": "http://proxy.internal:3128"}},
            "listeners": [{"address": "127.0.0.1:9000"}],
        },
    )
    assert cfg["allow_registration"] is True
    assert cfg["registration_token"] == 'tok"en\\with specials'
    assert cfg["new_user_displayname_suffix"] == "\U0001f495"
    assert cfg["trusted_servers"] == []
    # Tables merge recursively; a null drops the key; lists replace.
    assert cfg["db"] == {"url": "postgresql:///palpo?user=palpo&host=/var/run/postgresql", "pool_size": 20}
    assert cfg["well_known"] == {"server": "example.test:8448", "support_email": "admin@example.test"}
    assert cfg["rc_login"] == {"per_second": 0.5, "burst": 3}
    assert cfg["proxy"] == {"global": {"url": "http://proxy.internal:3128"}}
    assert cfg["listeners"] == [{"address": "127.0.0.1:9000"}]


@pytest.mark.parametrize(
    "extra,needle",
    [
        ({"homeserver_database": "sqlite"}, "homeserver_database=postgresql"),
        ({"matrix_homeserver_socket": "/run/palpo/palpo.sock"}, "matrix_homeserver_socket must be"),
        ({"homeserver_palpo_binary_src": ""}, "homeserver_palpo_url"),
        ({"homeserver_palpo_url": "https://example.test/palpo"}, "exactly one of"),
        ({"homeserver_palpo_version": ""}, "homeserver_palpo_version"),
    ],
)
def test_bad_palpo_settings_stop_in_preflight(tmp_path, extra, needle):
    proc, rendered = _render(tmp_path, **extra)
    assert proc.returncode != 0
    assert needle in proc.stdout + proc.stderr
    assert not rendered.exists()


# --- the forward proxy (matrix_forward_proxy_*) as Palpo's `proxy` setting ---


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({}, None),
        # One proxy for everything: `global`; the scheme and port Synapse assumes are written out.
        ({"matrix_forward_proxy_https": "http://mx:s3cret@squid.internal:3128"},
         {"global": {"url": "http://mx:s3cret@squid.internal:3128"}}),
        ({"matrix_forward_proxy_https": "squid.internal/", "matrix_forward_proxy_http": "squid.internal/"},
         {"global": {"url": "http://squid.internal:1080"}}),
        ({"matrix_forward_proxy_https": "https://[2001:db8::3]"}, {"global": {"url": "https://[2001:db8::3]:1080"}}),
        # no_proxy names become by_domain excludes (the name and its subdomains);
        # IPs and CIDRs need none (Palpo matches domain names only).
        ({"matrix_forward_proxy_https": "https://proxy.internal:8443",
          "matrix_forward_proxy_no_proxy": ["localhost", ".corp.example", "10.0.0.0/8", "192.0.2.7", "::1", "push.example.net"]},
         {"by_domain": [{"url": "https://proxy.internal:8443",
                         "exclude": ["localhost", "*.localhost", "corp.example", "*.corp.example",
                                     "push.example.net", "*.push.example.net"]}]}),
        # Only IPs in no_proxy: by_domain without excludes (IP-literal URLs go direct).
        ({"matrix_forward_proxy_https": "http://proxy.internal:3128", "matrix_forward_proxy_no_proxy": ["10.0.0.0/8"]},
         {"by_domain": [{"url": "http://proxy.internal:3128", "exclude": []}]}),
        # '*' = never use the proxy.
        ({"matrix_forward_proxy_https": "http://proxy.internal:3128", "matrix_forward_proxy_no_proxy": ["*"]}, None),
    ],
    ids=["none", "global-credentials", "defaults", "ipv6-https", "by-domain", "by-domain-ips-only", "no-proxy-star"],
)
def test_forward_proxy_is_rendered_as_palpo_proxy(tmp_path, extra, expected):
    cfg = _config(tmp_path, **extra)
    assert cfg.get("proxy") == expected


def test_forward_proxy_credentials_stay_out_of_the_output(tmp_path):
    proc, rendered = _render(tmp_path, matrix_forward_proxy_https="http://mx:pr0xy-s3cret@squid.internal:3128",
                             matrix_forward_proxy_no_proxy=["localhost"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pr0xy-s3cret" in rendered.read_text()
    assert "pr0xy-s3cret" not in proc.stdout + proc.stderr


def test_palpo_refuses_two_different_proxies(tmp_path):
    proc, rendered = _render(tmp_path, matrix_forward_proxy_http="http://a.internal:3128",
                             matrix_forward_proxy_https="http://b.internal:3128")
    assert proc.returncode != 0
    assert "matrix_forward_proxy_http must be \"\" or the same URL as matrix_forward_proxy_https" in proc.stdout + proc.stderr
    assert not rendered.exists()
