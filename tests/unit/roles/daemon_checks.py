"""Where the render tests' daemon checks run, and how many of them ran.

`bash scripts/test.sh unit` installs Debian 12's nginx, Apache, HAProxy and Caddy on the
test machine with their services kept stopped and disabled (`ensure_unit_daemons` in
scripts/bootstrap.sh), and builds an image with Debian 13's nginx (1.26, OpenSSL 3.5). A
rendered nginx tree is checked by the first nginx whose build it was rendered for: this
machine's, else the image's, run in a container with no network that sees only the test's
scratch directory. Every check is counted (`record`); tests/unit/conftest.py prints the
counts at the end of the run.
"""

import collections
import functools
import os
import pathlib
import re
import shutil
import subprocess

NGINX_IMAGE = os.environ.get("MXEDGE_UNIT_NGINX_IMAGE", "mxedge/unit-nginx-debian13")
# nginx 1.25.1 replaced `listen ... http2` with the `http2` directive: the templates render
# one or the other, so a tree is only valid for an nginx on its side of that version.
NGINX_HTTP2_DIRECTIVE_SINCE = (1, 25, 1)

CHECKS = collections.Counter()


def record(check):
    """Count one check run by a daemon (the key names the daemon, its version and where it ran)."""
    CHECKS[check] += 1


def _version(text):
    return tuple(int(part) for part in text.split("."))


def _output(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


@functools.lru_cache(maxsize=None)
def host_version(daemon):
    """The version of a daemon on this machine ("" when absent)."""
    argv, pattern = {
        "nginx": (["nginx", "-v"], r"nginx/([0-9.]+)"),
        "apache2": (["apache2ctl", "-v"], r"Apache/([0-9.]+)"),
        "haproxy": (["haproxy", "-v"], r"HAProxy version ([0-9.]+)"),
        "caddy": (["caddy", "version"], r"v?([0-9.]+)"),
    }[daemon]
    if not shutil.which(argv[0]):
        return ""
    found = re.search(pattern, _output(argv))
    return found.group(1) if found else "?"


class Nginx:
    """An nginx to run `nginx -t` with: this machine's, or the one in NGINX_IMAGE."""

    def __init__(self, where, version, openssl, image=None):
        self.where, self.version, self.openssl, self.image = where, version, openssl, image

    def fits(self, pretended_version, needs_openssl_35):
        new_syntax = _version(pretended_version) >= NGINX_HTTP2_DIRECTIVE_SINCE
        if (_version(self.version) >= NGINX_HTTP2_DIRECTIVE_SINCE) != new_syntax:
            return False
        return not needs_openssl_35 or _version(self.openssl)[:2] >= (3, 5)

    def test(self, conf, scratch):
        """`nginx -t -c conf`, every file it reads being under scratch; the CompletedProcess."""
        argv = ["nginx", "-t", "-c", str(conf)]
        if self.image:
            argv = ["docker", "run", "--rm", "--network", "none",
                    "-v", f"{scratch}:{scratch}:ro", self.image] + argv
        record(f"nginx {self.version} ({self.where}): nginx -t")
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def test_alongside(self, files, scratch):
        """`nginx -T` of this nginx's own stock /etc/nginx (Debian's package files: nginx.conf including
        conf.d/*.conf and sites-enabled/*, the default site) with `files` ({path under /etc/nginx: local file})
        added, as the operator's configuration and the role's files of matrix_proxy_mode=alongside are; every
        other file it reads is under scratch. This machine's /etc/nginx is never changed: a copy is mounted over
        it in a private mount namespace, as the role's own candidate test does."""
        if self.image:
            argv = ["docker", "run", "--rm", "--network", "none", "-v", f"{scratch}:{scratch}:ro"]
            for target, source in files.items():
                argv += ["-v", f"{source}:{target}:ro"]
            argv += [self.image, "nginx", "-T"]
        else:
            tree = pathlib.Path(scratch) / "etc-nginx"
            shutil.copytree("/etc/nginx", tree, symlinks=True)
            for target, source in files.items():
                dest = tree / pathlib.PurePosixPath(target).relative_to("/etc/nginx")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" /etc/nginx && exec nginx -T', "sh", str(tree)]
        record(f"nginx {self.version} ({self.where}): nginx -T with Debian's stock nginx.conf")
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def __str__(self):
        return f"nginx {self.version} with OpenSSL {self.openssl} ({self.where})"


@functools.lru_cache(maxsize=None)
def nginxes():
    """Every nginx usable here: this machine's (as root), then the image's (when built)."""
    found = []
    if host_version("nginx") and os.geteuid() == 0:
        openssl = re.search(r"OpenSSL ([0-9.]+)", _output(["openssl", "version"]))
        found.append(Nginx("this machine", host_version("nginx"), openssl.group(1) if openssl else "0"))
    if shutil.which("docker") and subprocess.run(["docker", "image", "inspect", NGINX_IMAGE],
                                                 capture_output=True, check=False).returncode == 0:
        text = _output(["docker", "run", "--rm", "--network", "none", NGINX_IMAGE,
                        "sh", "-c", "nginx -v; openssl version"])
        version, openssl = re.search(r"nginx/([0-9.]+)", text), re.search(r"OpenSSL ([0-9.]+)", text)
        if version and openssl:
            found.append(Nginx(f"container {NGINX_IMAGE}", version.group(1), openssl.group(1), image=NGINX_IMAGE))
    return tuple(found)


def nginx_for(pretended_version, needs_openssl_35):
    """The first nginx that fits a tree rendered for that nginx build; None when there is none."""
    return next((n for n in nginxes() if n.fits(pretended_version, needs_openssl_35)), None)
