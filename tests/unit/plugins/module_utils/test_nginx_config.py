"""module_utils/nginx_config: the operator's listeners, read from `nginx -T` output."""

import pytest

from ansible_collections.mxedge.matrix.plugins.module_utils import nginx_config as nc

DEBIAN_MAIN = """user www-data;
worker_processes auto;
pid /run/nginx.pid;
include /etc/nginx/modules-enabled/*.conf;

events {
\tworker_connections 768;
}

http {
\tsendfile on;
\tinclude /etc/nginx/mime.types;
\tssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; # Dropping SSLv3, ref: POODLE
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}

#mail {
#\tserver {
#\t\tlisten     localhost:110;
#\t}
#}
"""

DEBIAN_DEFAULT = """server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server;
\troot /var/www/html;
\tserver_name _;
\tlocation / {
\t\ttry_files $uri $uri/ =404;
\t}
}
"""

EXAMPLE = """server {
    listen 443 ssl http2;
    listen [::]:443 ssl http2;
    server_name Example.TEST www.example.test;
    add_header X-Operator-Site "example.test" always;
    location / { root /srv/example; }
}
"""

UNRELATED = """# the operator's second site
server
{
    listen 443 ssl;
    server_name unrelated.test;
    include /etc/nginx/snippets/tls.conf;
}
"""

TLS_SNIPPET = "ssl_certificate /etc/ssl/x.pem;\nssl_certificate_key /etc/ssl/x.key;\n"
OWN = "server {\n    listen 443 ssl;\n    server_name matrix.example.test;\n}\n"


def dump(*files):
    """What nginx -T prints for these (path, text) files: a header line, the text, an empty line."""
    return "".join("# configuration file %s:\n%s\n" % (path, text) for path, text in files)


def debian(*sites, main=DEBIAN_MAIN, extra=()):
    files = [("/etc/nginx/nginx.conf", main), ("/etc/nginx/mime.types", "types {\n    text/html html;\n}\n")]
    files += list(extra)
    files += [("/etc/nginx/sites-enabled/%s" % name, text) for name, text in sites]
    return dump(*files)


def listener(port, names, default, where, context="http"):
    return {"port": port, "names": names, "default": default, "where": where, "context": context}


def strip(found):
    for entry in found:
        entry.pop("close")
    return found


CASES = [
    pytest.param(debian(("default", DEBIAN_DEFAULT)), None,
                 [listener(80, ["*"], True, "/etc/nginx/sites-enabled/default:1")], id="debian-stock"),
    pytest.param(debian(("default", DEBIAN_DEFAULT), ("example.test", EXAMPLE), ("unrelated.test", UNRELATED),
                        extra=[("/etc/nginx/snippets/tls.conf", TLS_SNIPPET)]),
                 None,
                 [listener(80, ["*"], True, "/etc/nginx/sites-enabled/default:1"),
                  # The first block on 443 is its default server (no default_server anywhere there).
                  listener(443, ["example.test", "www.example.test"], True, "/etc/nginx/sites-enabled/example.test:1"),
                  # The brace on a line of its own: "where" is the brace's line.
                  listener(443, ["unrelated.test"], False, "/etc/nginx/sites-enabled/unrelated.test:3")],
                 id="operator-sites-sorted-by-glob"),
    pytest.param(debian(("default", DEBIAN_DEFAULT), ("example.test", EXAMPLE),
                        extra=[("/etc/nginx/conf.d/mxedge-matrix.conf", OWN)]),
                 ["/etc/nginx/conf.d/mxedge-matrix.conf", "/etc/nginx/mxedge-matrix/"],
                 # The role's block, first on 443, is the default there: the operator's is not.
                 [listener(80, ["*"], True, "/etc/nginx/sites-enabled/default:1"),
                  listener(443, ["example.test", "www.example.test"], False, "/etc/nginx/sites-enabled/example.test:1")],
                 id="own-files-left-out"),
    pytest.param(debian(("a", "server { listen 8448 ssl; server_name a.test; }\n"),
                        ("b", "server { listen 127.0.0.1:8448 ssl default_server; server_name .b.test; }\n")),
                 [],
                 [listener(8448, ["a.test"], False, "/etc/nginx/sites-enabled/a:1"),
                  listener(8448, ["b.test", "*.b.test"], True, "/etc/nginx/sites-enabled/b:1")],
                 id="explicit-default-and-dot-name"),
    pytest.param(debian(("a", "server {\n    server_name \"\" Quoted.test;\n}\n")), [],
                 [listener(80, ["*", "quoted.test"], True, "/etc/nginx/sites-enabled/a:1")],
                 id="no-listen-is-port-80-and-empty-name-is-catch-all"),
    pytest.param(debian(("a", "server {\n  listen [::1]:8080;\n  listen [::]:8443 ssl;\n  listen unix:/run/x.sock;\n"
                              "  listen localhost;\n  listen *:9000 default;\n  server_name ~^(?<sub>\\w+)\\.Example\\.test$;\n}\n")),
                 [],
                 [listener(8080, ["~^(?<sub>w+).Example.test$"], True, "/etc/nginx/sites-enabled/a:1"),
                  listener(8443, ["~^(?<sub>w+).Example.test$"], True, "/etc/nginx/sites-enabled/a:1"),
                  listener(80, ["~^(?<sub>w+).Example.test$"], True, "/etc/nginx/sites-enabled/a:1"),
                  listener(9000, ["~^(?<sub>w+).Example.test$"], True, "/etc/nginx/sites-enabled/a:1")],
                 id="listen-address-forms-unix-skipped"),
    pytest.param(debian(("a", "server {\n    listen 443 ssl; # server_name commented.test;\n"
                              "    set $x \"}{;\";\n    return 200 '${x} # not a comment';\n"
                              "    server_name real.test;\n}\n")),
                 [],
                 [listener(443, ["real.test"], True, "/etc/nginx/sites-enabled/a:1")],
                 id="comments-quotes-and-variables"),
    pytest.param(debian(extra=[("/etc/nginx/conf.d/stream.conf", "")],
                        main=DEBIAN_MAIN + "stream {\n    server {\n        listen 443;\n        proxy_pass 10.0.0.1:443;\n"
                                           "    }\n}\n"),
                 [],
                 [listener(443, ["*"], True, "/etc/nginx/nginx.conf:24", context="stream")],
                 id="stream-server-holds-its-port"),
    pytest.param(debian(("a", "server {\n    listen 443 ssl;\n    include /etc/nginx/snippets/names.conf;\n}\n"),
                        extra=[("/etc/nginx/snippets/names.conf", "server_name from-snippet.test;\n")]),
                 [],
                 [listener(443, ["from-snippet.test"], True, "/etc/nginx/sites-enabled/a:1")],
                 id="server-name-from-an-included-snippet"),
    pytest.param(dump(("/opt/nginx/conf/nginx.conf", "events {}\nhttp {\n    include sites/*.conf;\n}\n"),
                      ("/opt/nginx/conf/sites/a.conf", "server { listen 81; server_name a.test; }\n"),
                      ("/opt/nginx/conf/sites/.hidden.conf", "server { listen 82; }\n"),
                      ("/opt/nginx/conf/sites/sub/b.conf", "server { listen 83; }\n")),
                 [],
                 [listener(81, ["a.test"], True, "/opt/nginx/conf/sites/a.conf:1")],
                 id="relative-include-glob-no-dotfiles-no-subdirs"),
    pytest.param(debian(("a", "server { listen 443 ssl; server_name a.test; }\n"),
                        ("a-again", "server { listen 443 ssl; server_name a.test; }\n")),
                 ["/etc/nginx/sites-enabled/a"],
                 [listener(443, ["a.test"], False, "/etc/nginx/sites-enabled/a-again:1")],
                 id="own-path-is-exact-not-a-prefix-of-another-name"),
]


@pytest.mark.parametrize("text,own,expected", CASES)
def test_listeners(text, own, expected):
    assert strip(nc.listeners(text, own)) == expected


def test_close_is_the_closing_brace():
    found = nc.listeners(debian(("unrelated.test", UNRELATED), extra=[("/etc/nginx/snippets/tls.conf", TLS_SNIPPET)]))
    assert found[0]["close"] == "/etc/nginx/sites-enabled/unrelated.test:7"


def test_a_file_included_twice_counts_twice():
    main = "events {}\nhttp {\n    include /etc/nginx/s.conf;\n    include /etc/nginx/s.conf;\n}\n"
    text = dump(("/etc/nginx/nginx.conf", main), ("/etc/nginx/s.conf", "server { listen 8000; }\n"))
    assert [entry["default"] for entry in nc.listeners(text)] == [True, False]


COVERS = [
    pytest.param(DEBIAN_MAIN, "/etc/nginx/conf.d/mxedge-matrix.conf", True, id="debian-conf.d"),
    pytest.param(DEBIAN_MAIN, "/etc/nginx/conf.d/sub/mxedge-matrix.conf", False, id="glob-stays-in-directory"),
    pytest.param(DEBIAN_MAIN.replace("\tinclude /etc/nginx/conf.d/*.conf;\n", ""), "/etc/nginx/conf.d/mxedge-matrix.conf",
                 False, id="conf.d-not-included"),
    pytest.param(DEBIAN_MAIN.replace("/etc/nginx/conf.d/*.conf", "conf.d/*.conf"), "/etc/nginx/conf.d/mxedge-matrix.conf",
                 True, id="relative-include"),
    pytest.param("include /etc/nginx/conf.d/*.conf;\nevents {}\nhttp {}\n", "/etc/nginx/conf.d/mxedge-matrix.conf",
                 False, id="included-outside-http"),
    pytest.param("events {}\nhttp {\n    server {\n        include /etc/nginx/conf.d/*.conf;\n    }\n}\n",
                 "/etc/nginx/conf.d/mxedge-matrix.conf", False, id="inside-a-server-is-not-http-level"),
]


@pytest.mark.parametrize("main,path,expected", COVERS)
def test_http_include_covers(main, path, expected):
    assert nc.http_include_covers(dump(("/etc/nginx/nginx.conf", main)), path) is expected


def test_includes_through_a_file_in_http():
    main = "events {}\nhttp {\n    include /etc/nginx/http.d/main.conf;\n}\n"
    text = dump(("/etc/nginx/nginx.conf", main), ("/etc/nginx/http.d/main.conf", "include /etc/nginx/conf.d/*.conf;\n"))
    assert nc.http_include_covers(text, "/etc/nginx/conf.d/mxedge-matrix.conf") is True


ERRORS = [
    pytest.param("nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n", "not the output of nginx -T", id="no-dump"),
    pytest.param(dump(("/etc/nginx/nginx.conf", "http {\n")), "unexpected end of file", id="unclosed-block"),
    pytest.param(dump(("/etc/nginx/nginx.conf", "}\n")), "/etc/nginx/nginx.conf:1: unexpected '}'", id="stray-brace"),
    pytest.param(dump(("/etc/nginx/nginx.conf", "return 200 \"x;\n")), "unterminated quoted string", id="open-quote"),
    pytest.param(dump(("/etc/nginx/nginx.conf", "http { include /etc/nginx/a.conf; }\n"),
                      ("/etc/nginx/a.conf", "include /etc/nginx/a.conf;\n")), "nested deeper", id="loop"),
]


@pytest.mark.parametrize("text,message", ERRORS)
def test_errors(text, message):
    with pytest.raises(nc.NginxConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        nc.listeners(text)


def test_own_paths_must_be_a_list():
    with pytest.raises(nc.NginxConfigError, match="own_paths must be a list"):
        nc.listeners(debian(), "/etc/nginx/conf.d/mxedge-matrix.conf")


ROLE_STUB = "server { listen 443; server_name matrix.example.test; }\n"
EXTRA = [
    # conf.d/*.conf comes before sites-enabled/*: the role's block would be the first on 443.
    pytest.param(debian(("example.test", EXAMPLE)), "/etc/nginx/conf.d/mxedge-matrix.conf:1", id="role-first-on-443"),
    # An explicit default_server of the operator's keeps its place.
    pytest.param(debian(("example.test", EXAMPLE.replace("listen 443 ssl http2;", "listen 443 ssl http2 default_server;"))),
                 "/etc/nginx/sites-enabled/example.test:1", id="operator-default-server-stays"),
    # The printed file of the same path (an earlier run's) is replaced, not read as well.
    pytest.param(debian(("example.test", EXAMPLE), extra=[("/etc/nginx/conf.d/mxedge-matrix.conf", OWN.replace("443", "8448"))]),
                 "/etc/nginx/conf.d/mxedge-matrix.conf:1", id="replaces-the-printed-file"),
]


@pytest.mark.parametrize("text,default_on_443", EXTRA)
def test_extra_files_show_the_configuration_as_it_would_be(text, default_on_443):
    found = nc.listeners(text, [], {"/etc/nginx/conf.d/mxedge-matrix.conf": ROLE_STUB})
    assert [entry["where"] for entry in found if entry["port"] == 443 and entry["default"]] == [default_on_443]
    assert not [entry for entry in found if entry["port"] == 8448]


def test_extra_files_must_be_a_dict():
    with pytest.raises(nc.NginxConfigError, match="extra_files must be a dict"):
        nc.listeners(debian(), [], ["/etc/nginx/conf.d/x.conf"])
