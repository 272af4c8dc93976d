"""The operator's state on a test host, for the alongside tests (docs/alongside.md).

    operator_state.py manifest PATH...   one line per directory, file and symlink under PATHs:
                                         kind, mode, owner, and the sha256 of a file or a link's target
    operator_state.py sites URL...       JSON {url: {status, headers (all but Date), body (base64)}},
                                         fetched with the system's CA store, verification on

Runs under the host's own python3 (standard library only); prepare installs it with a
#! line as /usr/local/bin/mxedge-test-operator-state.
"""

import base64
import hashlib
import json
import os
import ssl
import stat
import sys
import urllib.error
import urllib.request


def _entry(path):
    info = os.lstat(path)
    owner = "%d:%d" % (info.st_uid, info.st_gid)
    mode = "%04o" % stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return "%s l %s %s -> %s" % (path, mode, owner, os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return "%s d %s %s" % (path, mode, owner)
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return "%s f %s %s %s" % (path, mode, owner, digest)


def manifest(paths):
    lines = []
    for top in paths:
        if not os.path.lexists(top):
            lines.append("%s absent" % top)
            continue
        lines.append(_entry(top))
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                lines.append(_entry(os.path.join(root, name)))
    return "\n".join(sorted(lines)) + "\n"


def sites(urls):
    context = ssl.create_default_context()
    result = {}
    for url in urls:
        request = urllib.request.Request(url, headers={"User-Agent": "mxedge-test"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=15) as response:
                status, headers, body = response.status, response.getheaders(), response.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, error.headers.items(), error.read()
        result[url] = {"status": status,
                       "headers": sorted([name.lower(), value] for name, value in headers if name.lower() != "date"),
                       "body": base64.b64encode(body).decode()}
    return json.dumps(result, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("manifest", "sites"):
        sys.exit(__doc__)
    sys.stdout.write({"manifest": manifest, "sites": sites}[sys.argv[1]](sys.argv[2:]))
