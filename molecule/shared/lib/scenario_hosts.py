"""The hosts of a Molecule scenario, as its tests see them (molecule/shared/tests, edge, workers).

``Host`` is one container through testinfra, with its inventory variables.
``CurlClient`` is a host that runs curl against the proxies: many requests in
one remote command (each testinfra command is an Ansible run), each addressed
to one proxy with ``--resolve``, so that the proxy sees a real container
address as its client. ``proxies_by_flavour`` maps each flavour to its proxy
host; ``marker`` makes the unique token a test puts in a request to find it in
the logs.
"""

import base64
import shlex
import uuid

import testinfra
import testinfra.utils.ansible_runner


def runner(inventory):
    """The scenario's Ansible runner (one per inventory: it parses the inventory once)."""
    return testinfra.utils.ansible_runner.AnsibleRunner.get_runner(inventory)


class Host:
    """One container of the scenario, with its inventory variables."""

    def __init__(self, name, inventory):
        self.name = name
        self.host = testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")
        self.vars = runner(inventory).get_variables(name)

    @property
    def ip(self):
        return self.host.check_output("hostname -I").split()[0]

    def run(self, command):
        return self.host.run(command)


class CurlClient(Host):
    """A host that sends the scenario's requests with curl; public_names resolve to the proxy addressed."""

    def __init__(self, name, inventory, public_names):
        super().__init__(name, inventory)
        self.public_names = tuple(public_names)

    def curl_many(self, requests, proxy_ip=None, timeout=30, data_file=None):
        """[(url, [curl args])] (through the proxy at proxy_ip) -> [(status, headers, body bytes)], one remote command.

        One round trip to the host however many requests (each testinfra command is an Ansible run); every request
        is still its own curl, its own connection. data_file: a file on the host sent as each request's body. Header
        names are lower-cased; with several header blocks (100 Continue), the last one's values win.
        """
        resolve = []
        if proxy_ip:
            for name in self.public_names:
                for port in (443, 8448):
                    resolve += ["--resolve", f"{name}:{port}:{proxy_ip}"]
        parts = []
        for url, args in requests:
            tag = uuid.uuid4().hex
            body, head = f"/tmp/mx-{tag}.body", f"/tmp/mx-{tag}.head"
            extra = " ".join(shlex.quote(a) for a in list(args) + resolve)
            if data_file:
                extra += f" --data-binary @{shlex.quote(data_file)}"
            parts.append(
                f"curl -sS --path-as-is --max-time {timeout} -o {body} -D {head} -w '%{{http_code}}' {extra} "
                f"{shlex.quote(url)}; echo; base64 -w0 {body} 2>/dev/null; echo; base64 -w0 {head} 2>/dev/null; echo; "
                f"rm -f {body} {head}"
            )
        lines = self.host.run("; ".join(parts)).stdout.split("\n")
        results = []
        for index in range(len(requests)):
            status_line, body_b64, head_b64 = lines[3 * index:3 * index + 3]
            headers = {}
            for line in base64.b64decode(head_b64).decode("latin-1").split("\n"):
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            results.append((int(status_line or 0), headers, base64.b64decode(body_b64)))
        return results

    def curl(self, url, *args, proxy_ip=None, timeout=30, data_file=None):
        """One request (as curl_many); returns (status, headers, body bytes)."""
        return self.curl_many([(url, args)], proxy_ip=proxy_ip, timeout=timeout, data_file=data_file)[0]


def proxies_by_flavour(inventory, group, flavours):
    """Flavour -> proxy Host of the inventory group, one per flavour (asserted)."""
    hosts = {}
    for name in runner(inventory).get_hosts(group):
        host = Host(name, inventory)
        hosts[host.vars["matrix_proxy_flavour"]] = host
    assert sorted(hosts) == sorted(flavours), hosts
    return hosts


def marker():
    """A token unique to one request, to find it in the logs."""
    return "mx" + uuid.uuid4().hex[:16]
