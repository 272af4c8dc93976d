"""The operator's Apache as `apache2ctl -S` and its Listen lines report it (module_utils/apache_config.py)."""

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils.apache_config import listen_ports, listeners

SITES = "/etc/apache2/sites-enabled"
OWN = ["/etc/apache2/sites-enabled/mxedge-matrix.conf", "/etc/apache2/sites-available/mxedge-matrix.conf",
       "/etc/apache2/mxedge-matrix/"]

# Apache 2.4.62 (Debian 12), two name-based TLS sites, IP-based and unnamed ones, the role's own site.
DUMP = f"""VirtualHost configuration:
[::1]:8443             ipbased.test ({SITES}/example.test.conf:9)
127.0.0.1:8443         ipbased.test ({SITES}/example.test.conf:9)
*:80                   127.0.0.1 ({SITES}/000-default.conf:1)
*:443                  is a NameVirtualHost
         default server example.test ({SITES}/example.test.conf:1)
         port 443 namevhost example.test ({SITES}/example.test.conf:1)
                 alias www.example.test
                 wild alias *.Example.test
         port 443 namevhost unrelated.test ({SITES}/unrelated.test.conf:6)
         port 443 namevhost matrix.example.test ({SITES}/mxedge-matrix.conf:40)
*:8080                 127.0.0.1 ({SITES}/example.test.conf:12)
ServerRoot: "/etc/apache2"
Main DocumentRoot: "/var/www/html"
Mutex default: dir="/var/run/apache2/" mechanism=default
PidFile: "/var/run/apache2/apache2.pid"
Define: DUMP_VHOSTS
User: name="www-data" id=33
"""

CASES = {
    "nothing": ("", [], []),
    "no virtual hosts": ("VirtualHost configuration:\nServerRoot: \"/etc/apache2\"\n", [], []),
    "debian default": (
        f"VirtualHost configuration:\n*:80                   hs1 ({SITES}/000-default.conf:1)\nServerRoot: \"/etc/apache2\"\n",
        [],
        [{"port": 80, "names": ["hs1"], "default": True, "where": f"{SITES}/000-default.conf:1", "address": "*"}],
    ),
    "name-based, IP-based, own left out": (DUMP, OWN, [
        {"port": 8443, "names": ["ipbased.test"], "default": True, "where": f"{SITES}/example.test.conf:9",
         "address": "[::1]"},
        {"port": 8443, "names": ["ipbased.test"], "default": True, "where": f"{SITES}/example.test.conf:9",
         "address": "127.0.0.1"},
        {"port": 80, "names": ["127.0.0.1"], "default": True, "where": f"{SITES}/000-default.conf:1", "address": "*"},
        {"port": 443, "names": ["example.test", "www.example.test", "*.example.test"], "default": True,
         "where": f"{SITES}/example.test.conf:1", "address": "*"},
        {"port": 443, "names": ["unrelated.test"], "default": False, "where": f"{SITES}/unrelated.test.conf:6",
         "address": "*"},
        {"port": 8080, "names": ["127.0.0.1"], "default": True, "where": f"{SITES}/example.test.conf:12",
         "address": "*"},
    ]),
    "own paths not given: the role's site counts": (
        "\n".join(DUMP.splitlines()[4:11]), [], [
            {"port": 443, "names": ["example.test", "www.example.test", "*.example.test"], "default": True,
             "where": f"{SITES}/example.test.conf:1", "address": "*"},
            {"port": 443, "names": ["unrelated.test"], "default": False, "where": f"{SITES}/unrelated.test.conf:6",
             "address": "*"},
            {"port": 443, "names": ["matrix.example.test"], "default": False, "where": f"{SITES}/mxedge-matrix.conf:40",
             "address": "*"},
        ]),
    "the role's site is the default": (
        "*:443                  is a NameVirtualHost\n"
        f"         default server matrix.example.test ({SITES}/mxedge-matrix.conf:40)\n"
        f"         port 443 namevhost matrix.example.test ({SITES}/mxedge-matrix.conf:40)\n"
        f"         port 443 namevhost www.test ({SITES}/www.conf:1)\n", OWN,
        [{"port": 443, "names": ["www.test"], "default": False, "where": f"{SITES}/www.conf:1", "address": "*"}],
    ),
    "same vhost twice in a block: only the first is the default": (
        "_default_:443          is a NameVirtualHost\n"
        "         default server a.test (/srv/a.conf:1)\n"
        "         port 443 namevhost a.test (/srv/a.conf:1)\n"
        "         port 443 namevhost a.test (/srv/a.conf:1)\n", [],
        [{"port": 443, "names": ["a.test"], "default": True, "where": "/srv/a.conf:1", "address": "_default_"},
         {"port": 443, "names": ["a.test"], "default": False, "where": "/srv/a.conf:1", "address": "_default_"}],
    ),
    "IPv6 name-based block, path with a colon": (
        "[2001:db8::1]:443      is a NameVirtualHost\n"
        "         default server v6.test (/srv/x:y/v6.conf:3)\n"
        "         port 443 namevhost v6.test (/srv/x:y/v6.conf:3)\n"
        "                 alias V6-Alias.test\n", ["/srv/x:y/other.conf"],
        [{"port": 443, "names": ["v6.test", "v6-alias.test"], "default": True, "where": "/srv/x:y/v6.conf:3",
          "address": "[2001:db8::1]"}],
    ),
}


@pytest.mark.parametrize("text, own, expected", CASES.values(), ids=list(CASES))
def test_listeners(text, own, expected):
    assert listeners(text, own) == expected


LISTENS = {
    "debian ports.conf": (
        "/etc/apache2/ports.conf:5:Listen 80\n/etc/apache2/ports.conf:8:\tListen 443\n"
        "/etc/apache2/ports.conf:12:\tListen 443\n", [], [80, 443]),
    "addresses and protocols": (
        "/etc/apache2/ports.conf:1:Listen 192.0.2.1:8080 http\n/etc/apache2/ports.conf:2:Listen [::1]:8448 https\n"
        "/etc/apache2/conf-enabled/x.conf:3:  listen 0.0.0.0:9000\n", [], [8080, 8448, 9000]),
    "own files and comments left out": (
        "/etc/apache2/sites-enabled/mxedge-matrix.conf:3:Listen 8448 https\n"
        "/etc/apache2/ports.conf:3:#Listen 8000\n/etc/apache2/ports.conf:4:Listen 80\n", OWN, [80]),
    "nothing": ("", OWN, []),
}


@pytest.mark.parametrize("text, own, expected", LISTENS.values(), ids=list(LISTENS))
def test_listen_ports(text, own, expected):
    assert listen_ports(text, own) == expected
