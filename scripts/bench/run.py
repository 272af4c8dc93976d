"""Benchmark of the proxy flavours against the homeserver alone (issue 13).

Run through scripts/bench.sh, which prepares the environment and removes the
containers afterwards. Phases, in one run:

1. setup: one Debian 12 container per flavour (mxedge-bench-<flavour>, network
   mxedge-bench), the test CA and certificates (playbooks/bench.yml --tags setup).
2. converge: playbooks/site.yml per container, one after the other: fresh
   converge time, then an idempotent re-run (time and changed count).
3. tools: a registered user, wrk and the helpers in every container.
4. throughput: GET /_matrix/client/versions with wrk inside each container
   against its own loopback, direct (http://127.0.0.1:8008) and through the
   proxy (https, keep-alive), interleaved: every round measures, for each
   flavour in a rotating order, direct then proxied, so drift cancels. Then
   the same with Synapse pinned to core 0 and the proxy and wrk to core 1
   (taskset from the machine), to tell CPU taken from Synapse from work added;
   and, in nginx's container, Synapse's requests per CPU second alone at
   several concurrencies, with nginx's headers, and through nginx.
5. well-known: /.well-known/matrix/client served by the proxy vs by Synapse
   (throughput, latency, bodies and headers compared).
6. long-polls: idle /sync long-polls held for the sync timeout, at each level
   (1,000 then 5,000), every flavour at the same time in its own container; a
   flavour stops at the first level it misses; then Synapse alone (direct) at
   the highest level as the baseline.
7. workers (docs/workers.md): mxedge-bench-workers is mxedge-bench-nginx grown
   into workers (PostgreSQL, Redis, two sync workers, two client readers, the
   same nginx). Routed reads through nginx, workers vs the single process of
   mxedge-bench-nginx, interleaved; then 10,000 idle /sync long-polls through
   the two sync workers, and the same through the single process.
8. report: a table on stdout and docs/benchmark.md (scripts/bench/report.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "scripts" / "bench" / "inventory.yml"
FLAVOURS = ("nginx", "apache", "caddy", "haproxy")
DIRECT_URL = "http://127.0.0.1:8008"
PROXY_URL = "https://matrix.bench.test"
WELL_KNOWN_PROXY_URL = "https://bench.test"
CA_IN_CONTAINER = "/usr/local/share/ca-certificates/mxedge-test-ca.crt"
HELPERS = "/opt/mxedge-bench"
PHASES = ("throughput", "pinned", "profile", "wellknown", "longpoll", "workers")
WORKERS = "workers"  # the container mxedge-bench-workers (scripts/bench/inventory.yml)
SINGLE = "nginx"  # its single-process twin: the same flavour and settings, no workers
# Routed reads of the workers phase: (path, needs an access token). Both go to
# the client readers (MX16, class client_reader, not sticky).
ROUTED_READS = {
    "versions": ("/_matrix/client/versions", False),
    "whoami": ("/_matrix/client/v3/account/whoami", True),
}


def log(msg: str) -> None:
    print(f"==> [{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description="Benchmark every proxy flavour against the homeserver alone (see docs/benchmark.md).",
    )
    parser.add_argument("--flavours", default=",".join(FLAVOURS), help="comma-separated flavours to measure (default: all four)")
    parser.add_argument(
        "--quick", action="store_true", help="small counts and durations for development (1 round of 3 s, 100 long-polls held 10 s)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per wrk measurement (default 8, quick 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--longpoll-levels", default=None, help="long-poll counts, ascending (default 1000,5000; quick 100)")
    parser.add_argument("--longpoll-timeout", type=int, default=None, help="sync timeout in seconds (default 60, quick 10)")
    parser.add_argument("--longpoll-ramp", type=int, default=200, help="long-poll connections being opened at once (default 200)")
    parser.add_argument(
        "--reuse", action="store_true", help="keep existing containers and skip setup and the timed converges"
    )
    parser.add_argument(
        "--converge-results",
        default="",
        help="with --reuse: report the converge figures of an earlier run's results file (the run that made the containers)",
    )
    parser.add_argument(
        "--converge-parallel",
        action="store_true",
        help="fresh converges of all flavours at the same time (faster on a busy machine; times include the contention)",
    )
    parser.add_argument(
        "--no-rerun-pipelining",
        dest="rerun_pipelining",
        action="store_false",
        help="skip the extra idempotent re-run with pipelining off (ANSIBLE_PIPELINING=false; measured by default,"
        " it shows what pipelining saves)",
    )
    parser.add_argument(
        "--no-rerun-ssh",
        dest="rerun_ssh",
        action="store_false",
        help="skip the idempotent re-runs over SSH as an unprivileged user with sudo, pipelining on and off"
        " (measured by default: the operator's path)",
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the sections of the existing --results file for the phases this run skips"
    )
    parser.add_argument("--skip", default="", help=f"comma-separated phases to skip: {', '.join(PHASES)}")
    parser.add_argument(
        "--workers-longpolls", type=int, default=None,
        help="idle long-polls through the two sync workers, and through the single process (default 10000, quick 200)",
    )
    parser.add_argument(
        "--workers-longpoll-timeout", type=int, default=None,
        help="their sync timeout in seconds (default 90: all 10,000 open well before the first ones end; quick 10)",
    )
    parser.add_argument(
        "--workers-tokens", type=int, default=16,
        help="access tokens (devices) the long-polls take in turn, so the token hash spreads them (default 16)",
    )
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmark.md"), help="Markdown report, '' for none (default: docs/benchmark.md)")
    parser.add_argument(
        "--results",
        default=str(ROOT / "docs" / "benchmark.json"),
        help="raw results, JSON, next to the report (default: docs/benchmark.json; --merge keeps its other sections)",
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from --results and stop")
    args = parser.parse_args(argv)
    args.flavours = [f for f in args.flavours.split(",") if f]
    unknown = sorted(set(args.flavours) - set(FLAVOURS))
    if unknown:
        parser.error(f"--flavours: unknown {', '.join(unknown)}; allowed: {', '.join(FLAVOURS)} (relayd cannot run here)")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 8)
    args.longpoll_timeout = args.longpoll_timeout or (10 if args.quick else 60)
    levels = args.longpoll_levels or ("100" if args.quick else "1000,5000")
    args.longpoll_levels = sorted(int(x) for x in levels.split(","))
    args.skip = set(filter(None, args.skip.split(",")))
    unknown = sorted(args.skip - set(PHASES))
    if unknown:
        parser.error(f"--skip: unknown {', '.join(unknown)}; allowed: {', '.join(PHASES)}")
    if "workers" not in args.skip and SINGLE not in args.flavours:
        parser.error(f"the workers phase compares with the single process behind {SINGLE}: add it to --flavours"
                     " or --skip workers")
    args.workers_longpolls = args.workers_longpolls or (200 if args.quick else 10000)
    args.workers_longpoll_timeout = args.workers_longpoll_timeout or (10 if args.quick else 90)
    args.targets = args.flavours + ([] if "workers" in args.skip else [WORKERS])
    return args


def host(flavour: str) -> str:
    return f"mxedge-bench-{flavour}"


def sh(cmd: list[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dexec(flavour: str, script: str, timeout: float = 600, check: bool = True) -> str:
    return sh(["docker", "exec", host(flavour), "sh", "-c", script], timeout=timeout, check=check).stdout


def playbook(args_list: list[str], log_name: str, env: dict | None = None) -> tuple[float, str]:
    cmd = ["ansible-playbook", "-i", str(INVENTORY), *args_list]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    took = time.monotonic() - started
    log_dir = Path(os.environ.get("MXEDGE_CACHE", ROOT / ".cache")) / "bench" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{log_name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-playbook {' '.join(args_list)} failed; see {log_dir / log_name}.log:\n{proc.stdout[-4000:]}")
    return took, proc.stdout


def recap(output: str, name: str) -> dict:
    match = re.search(rf"^{re.escape(name)}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M)
    if not match:
        return {}
    ok, changed, unreachable, failed = (int(x) for x in match.groups())
    return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}


SLOWEST = 10  # tasks of each re-run reported (the collection's task names, from profile_tasks)


def slowest_tasks(output: str, limit: int = SLOWEST) -> list[list]:
    """Task timings printed by ansible.posix.profile_tasks, slowest first."""
    found = re.findall(r"^(.+?) -{2,} (\d+\.\d+)s$", output, re.M)
    rows = sorted(((name.strip(), float(sec)) for name, sec in found), key=lambda r: -r[1])
    return [[name, sec] for name, sec in rows[:limit]]


def ssh_vars() -> list[str]:
    """Extra vars for a run over SSH as the deploy user with sudo (playbooks/bench.yml makes both)."""
    key = Path(os.environ.get("MXEDGE_CACHE", ROOT / ".cache")) / "bench" / "deploy_ed25519"
    common = ('-o ProxyCommand="docker exec -i %h socat STDIO TCP:127.0.0.1:22" -o StrictHostKeyChecking=no'
              " -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    return ["-e", json.dumps({"ansible_connection": "ssh", "ansible_user": "deploy", "ansible_become": True,
                              "ansible_ssh_private_key_file": str(key), "ansible_ssh_common_args": common})]


QUIET_BUSY = 15  # percent of all cores: the machine counts as quiet below this
QUIET_WAIT = 120  # seconds at most


def machine_ticks(line: str) -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine from the "cpu" line of /proc/stat: busy is all but idle and iowait."""
    cpu = [int(x) for x in line.split()[1:]]
    return sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0), sum(cpu)


def settle() -> float:
    """Wait until the machine is quiet (a freshly started Synapse is busy for a while after its converge), so
    that a re-run measures the collection on a converged host, not the start-up of the last one. Returns the
    seconds waited."""
    started = time.monotonic()
    while True:
        busy0, total0 = machine_ticks(Path("/proc/stat").read_text().splitlines()[0])
        time.sleep(2)
        busy1, total1 = machine_ticks(Path("/proc/stat").read_text().splitlines()[0])
        busy = 100 * (busy1 - busy0) / ((total1 - total0) or 1)
        waited = time.monotonic() - started
        if busy < QUIET_BUSY or waited >= QUIET_WAIT:
            return round(waited, 1)


def converge(args: argparse.Namespace, results: dict) -> None:
    hosts = ",".join(host(f) for f in args.targets)
    log(f"setup: containers and test CA for {hosts}")
    playbook(["-e", f"mxedge_bench_hosts={hosts}", "--tags", "setup", str(ROOT / "playbooks" / "bench.yml")], "setup")
    # profile_tasks lists every task (not only its default 20), so the slowest ten are exact.
    profile = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"}

    def fresh(flavour: str) -> None:
        entry = results["converge"].setdefault(flavour, {})
        log(f"converge {flavour}: fresh")
        took, out = playbook(["--limit", host(flavour), str(ROOT / "playbooks" / "site.yml")], f"converge-{flavour}",
                             env=profile)
        entry["fresh_s"] = round(took, 1)
        entry["fresh"] = recap(out, host(flavour))
        entry["fresh_slowest"] = slowest_tasks(out)
        entry["fresh_parallel"] = args.converge_parallel
        log(f"converge {flavour}: {took:.0f} s")

    if args.converge_parallel:
        with concurrent.futures.ThreadPoolExecutor(len(args.flavours)) as pool:
            for fut in [pool.submit(fresh, f) for f in args.flavours]:
                fut.result()
    for flavour in args.flavours:
        if not args.converge_parallel:
            fresh(flavour)
        entry = results["converge"][flavour]
        entry["settle_s"] = settle()
        log(f"re-run {flavour} (after {entry['settle_s']:.0f} s for the machine to be quiet)")
        took, out = playbook(["--limit", host(flavour), str(ROOT / "playbooks" / "site.yml")], f"rerun-{flavour}", env=profile)
        entry["rerun_s"] = round(took, 1)
        entry["rerun"] = recap(out, host(flavour))
        entry["rerun_slowest"] = slowest_tasks(out)
        log(f"re-run {flavour}: {took:.0f} s, changed={entry['rerun'].get('changed')}, tasks (ok)={entry['rerun'].get('ok')}")
        log(f"re-run {flavour}: the {SLOWEST} slowest tasks")
        for rank, (name, sec) in enumerate(entry["rerun_slowest"], 1):
            log(f"  {rank:2d}. {sec:5.2f} s  {name}")
        if args.rerun_pipelining:
            # ansible.cfg turns pipelining on for every connection (the docker one
            # included); a run with it off shows what it saves.
            took, out = playbook(
                ["--limit", host(flavour), str(ROOT / "playbooks" / "site.yml")], f"rerun-no-pipelining-{flavour}",
                env={"ANSIBLE_PIPELINING": "false"},
            )
            entry["rerun_no_pipelining_s"] = round(took, 1)
            entry["rerun_no_pipelining"] = recap(out, host(flavour))
            log(f"re-run {flavour} without pipelining: {took:.0f} s, changed={entry['rerun_no_pipelining'].get('changed')}")
        if args.rerun_ssh:
            # The operator's path: OpenSSH as the deploy user, sudo for become
            # (extra vars outrank the inventory's docker connection).
            for pipelining in ("true", "false"):
                key = "rerun_ssh_s" if pipelining == "true" else "rerun_ssh_no_pipelining_s"
                took, out = playbook(
                    ["--limit", host(flavour), *ssh_vars(), str(ROOT / "playbooks" / "site.yml")],
                    f"rerun-ssh{'' if pipelining == 'true' else '-no-pipelining'}-{flavour}",
                    env={"ANSIBLE_PIPELINING": pipelining},
                )
                entry[key] = round(took, 1)
                entry[key[:-2]] = recap(out, host(flavour))
                log(f"re-run {flavour} over SSH, pipelining {'on' if pipelining == 'true' else 'off'}: {took:.0f} s, "
                    f"changed={entry[key[:-2]].get('changed')}")
    if WORKERS in args.targets:
        # Fresh converge and re-run of the workers deployment (PostgreSQL, Redis,
        # four workers and nginx), reported in the workers section.
        entry = results.setdefault("workers", {}).setdefault("converge", {})
        for step in ("fresh", "rerun"):
            log(f"converge {WORKERS}: {step}")
            took, out = playbook(["--limit", host(WORKERS), str(ROOT / "playbooks" / "site.yml")], f"{step}-{WORKERS}",
                                 env=profile)
            entry[f"{step}_s"] = round(took, 1)
            entry[step] = recap(out, host(WORKERS))
            entry[f"{step}_slowest"] = slowest_tasks(out)
            log(f"converge {WORKERS} {step}: {took:.0f} s, changed={entry[step].get('changed')}")


def tools(args: argparse.Namespace) -> None:
    hosts = ",".join(host(f) for f in args.targets)
    log("tools: user, wrk, helpers")
    playbook(["-e", f"mxedge_bench_hosts={hosts}", "--tags", "tools", str(ROOT / "playbooks" / "bench.yml")], "tools")


# CPU profile of a wrk run: every process of the container (its PID namespace) and the
# machine's busy time (/proc/stat is not namespaced), read before and after.
# The shell's own line (@@SELF) carries the CPU time of its children that have exited: wrk.
_SNAPSHOT = ("cat /proc/[0-9]*/stat 2>/dev/null; echo @@SELF; cat /proc/$$/stat; echo @@MACHINE; head -n 1 /proc/stat;"
             " echo @@END")
CPU_GROUPS = {"python": "Synapse", "python3": "Synapse", "nginx": "proxy", "apache2": "proxy", "caddy": "proxy",
              "haproxy": "proxy", "wrk": "wrk"}
TICKS = os.sysconf("SC_CLK_TCK")


def _snapshot(text: str) -> tuple[dict, int]:
    """(CPU ticks by group, machine busy ticks) of one _SNAPSHOT output. Groups: Synapse, proxy, wrk
    (the shell's exited children), and every other process by its name."""
    procs, rest = text.split("@@SELF", 1)
    own, machine = rest.split("@@MACHINE", 1)
    groups: dict = {}
    for line in procs.splitlines():
        if ")" not in line:
            continue
        comm = line[line.index("(") + 1:line.rindex(")")]
        fields = line[line.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        group = CPU_GROUPS.get(comm, comm)
        groups[group] = groups.get(group, 0) + ticks
    own = own.strip()
    fields = own[own.rindex(")") + 2:].split()
    groups["wrk"] = groups.get("wrk", 0) + int(fields[13]) + int(fields[14])  # cutime, cstime
    busy, _total = machine_ticks(machine.split("@@END")[0])
    return groups, busy


def wrk(flavour: str, url: str, args: argparse.Namespace, duration: int, headers: list | tuple = (), prefix: str = "",
        connections: int = 0) -> dict:
    out = dexec(
        flavour,
        f"{_SNAPSHOT}; echo @@WRK; {prefix}wrk -t{args.threads} -c{connections or args.connections} -d{duration}s"
        f" --timeout 10s{''.join(f' -H {shlex.quote(h)}' for h in headers)} -s {HELPERS}/wrk_json.lua '{url}'; echo @@AFTER;"
        f" {_SNAPSHOT}",
        timeout=duration + 60,
    )
    before, rest = out.split("@@WRK", 1)
    wrk_out, after = rest.split("@@AFTER", 1)
    line = wrk_out[wrk_out.rindex('{"requests"'):].splitlines()[0]
    data = json.loads(line)
    seconds = data["duration_us"] / 1e6
    data["rps"] = round(data["requests"] / seconds, 1)
    data["errors_total"] = sum(data["errors"].values())
    (g0, m0), (g1, m1) = _snapshot(before), _snapshot(after)
    # Percent of one core over the run (200 = both cores of a 2-core machine).
    data["cpu"] = {g: round(100 * (g1.get(g, 0) - g0.get(g, 0)) / TICKS / seconds, 1) for g in set(g0) | set(g1)}
    data["cpu"]["machine"] = round(100 * (m1 - m0) / TICKS / seconds, 1)
    return data


def interleaved(args: argparse.Namespace, pairs: dict, duration: int, prefix: str = "") -> dict:
    """pairs: name -> (direct path URL, proxied URL). Each round rotates the flavour order."""
    runs: dict = {f: {"direct": [], "proxy": []} for f in args.flavours}
    for rnd in range(args.rounds):
        order = args.flavours[rnd % len(args.flavours):] + args.flavours[: rnd % len(args.flavours)]
        for flavour in order:
            direct_url, proxy_url = pairs[flavour]
            runs[flavour]["direct"].append(wrk(flavour, direct_url, args, duration, prefix=prefix))
            runs[flavour]["proxy"].append(wrk(flavour, proxy_url, args, duration, prefix=prefix))
            d, p = runs[flavour]["direct"][-1]["rps"], runs[flavour]["proxy"][-1]["rps"]
            log(f"round {rnd + 1}/{args.rounds} {flavour}: direct {d:.0f} req/s, proxied {p:.0f} req/s ({p / d:.2f}x)")
    return {f: summarise(v) for f, v in runs.items()}


PROXY_COMMS = {name for name, group in CPU_GROUPS.items() if group == "proxy"}


def pin(flavour: str, synapse_cpus: str, proxy_cpus: str) -> None:
    """CPU affinity (every thread) of the container's Synapse and proxy processes, set from the machine:
    the containers lack CAP_SYS_NICE, and Synapse runs as another user than docker exec."""
    for line in sh(["docker", "top", host(flavour), "-eo", "pid,comm,args"]).stdout.splitlines()[1:]:
        pid, comm, cmd = (line.split(None, 2) + ["", ""])[:3]
        cpus = synapse_cpus if "synapse.app." in cmd else proxy_cpus if comm in PROXY_COMMS else None
        if cpus:
            sh(["taskset", "-a", "-p", "-c", cpus, pid])


ALL_CPUS = ",".join(str(cpu) for cpu in range(os.cpu_count() or 1))


def unpin(flavour: str) -> None:
    """Every CPU again for the container's Synapse and proxy; a failure is logged, not raised, so that
    the other containers are restored too and the phase's own error is not hidden."""
    try:
        pin(flavour, ALL_CPUS, ALL_CPUS)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        log(f"could not restore the CPU affinity in {host(flavour)}: {exc}; run: taskset -a -p -c {ALL_CPUS} <pid>")


def pinned_throughput(args: argparse.Namespace) -> dict:
    """Where the throughput gap goes: the throughput runs again with Synapse alone on core 0 and the proxy and
    wrk on core 1 (direct: wrk alone there). If the proxied/direct ratio then reaches 1, what the proxy costs
    Synapse with the cores shared is CPU time taken from it, not work added to it."""
    try:
        for flavour in args.flavours:
            pin(flavour, "0", "1")
        pairs = {f: (f"{DIRECT_URL}/_matrix/client/versions", f"{PROXY_URL}/_matrix/client/versions") for f in args.flavours}
        return interleaved(args, pairs, args.duration, prefix="taskset -c 1 ")
    finally:
        for flavour in args.flavours:
            unpin(flavour)


# Hop-by-hop headers: not what a proxy adds to the request, but how it carries it.
HOP_BY_HOP = {"connection", "keep-alive", "content-length", "transfer-encoding", "te", "upgrade"}
PROFILE_CONNECTIONS = (4, 8, 16, 32, 64)


def upstream_headers(flavour: str) -> list[str]:
    """The headers the proxy sends Synapse with a request such as wrk's (which sends only Host): one request
    through the proxy (curl without its User-Agent and Accept), read off the container's loopback by tcpdump
    (its first GET of the path to port 8008; health checks of the proxy's own are other paths)."""
    out = dexec(
        flavour,
        "timeout 8 tcpdump -i lo -l -A -s0 -c 40 'tcp dst port 8008' >/tmp/mxedge-upstream.txt 2>/dev/null &"
        f" sleep 1; curl -s -o /dev/null -H 'User-Agent:' -H 'Accept:' {PROXY_URL}/_matrix/client/versions; wait;"
        " cat /tmp/mxedge-upstream.txt",
        timeout=30,
    )
    # tcpdump -A prints a carriage return as "." at the end of each line.
    lines = [line[:-1] if line.endswith(".") else line for line in out.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.endswith("GET /_matrix/client/versions HTTP/1.1")), None)
    if start is None:
        raise RuntimeError(f"{host(flavour)}: no request to Synapse seen through the proxy:\n{out[-2000:]}")
    headers = []
    for line in lines[start + 1:]:
        if not line or ": " not in line:
            break
        if line.split(":", 1)[0].lower() not in HOP_BY_HOP:
            headers.append(line)
    return headers


def synapse_profile(args: argparse.Namespace) -> dict:
    """Why Synapse serves fewer requests per CPU second through a proxy (each flavour's container, pinned as in
    the pinned phase): Synapse alone, Synapse alone with the headers that flavour adds (as it sends them,
    captured), and through the flavour; in nginx's container also Synapse alone at several client
    concurrencies. Each run's requests per second of Synapse's CPU."""
    out: dict = {}
    for flavour in args.flavours:
        headers = upstream_headers(flavour)
        log(f"profile {flavour}: the proxy sends Synapse {', '.join(h.split(':', 1)[0] for h in headers)}")
        counts = PROFILE_CONNECTIONS if flavour == SINGLE else (args.connections,)
        plan = [(f"direct, {n} connections", DIRECT_URL, [], n) for n in counts]
        plan.append((f"direct with {flavour}'s headers, {args.connections} connections", DIRECT_URL, headers, 0))
        plan.append((f"through {flavour}, {args.connections} connections", PROXY_URL, [], 0))
        runs: dict = {name: [] for name, *_rest in plan}
        try:
            pin(flavour, "0", "1")
            for rnd in range(args.rounds):
                for name, base, extra, connections in plan if rnd % 2 == 0 else list(reversed(plan)):
                    run = wrk(flavour, base + "/_matrix/client/versions", args, args.duration, headers=extra,
                              prefix="taskset -c 1 ", connections=connections)
                    cpu = run["cpu"].get("Synapse", 0)
                    run["per_cpu_s"] = round(run["rps"] / (cpu / 100), 1) if cpu else None
                    runs[name].append(run)
                    log(f"profile {flavour} round {rnd + 1}/{args.rounds} {name}: {run['rps']:.0f} req/s, Synapse"
                        f" {cpu:.0f} %, {run['per_cpu_s']} requests per Synapse CPU second")
        finally:
            unpin(flavour)
        out[flavour] = {"headers": headers, "runs": {
            name: {
                "rps": statistics.median(r["rps"] for r in found),
                "synapse_cpu": statistics.median(r["cpu"].get("Synapse", 0) for r in found),
                "per_cpu_s": statistics.median(r["per_cpu_s"] for r in found if r["per_cpu_s"]),
                "errors": sum(r["errors_total"] for r in found),
            } for name, found in runs.items()}}
    return out


def summarise(runs: dict) -> dict:
    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    ratios = [p["rps"] / d["rps"] for d, p in zip(runs["direct"], runs["proxy"]) if d["rps"]]
    return {
        "direct_rps": med("direct", "rps"),
        "proxy_rps": med("proxy", "rps"),
        "direct_p50_ms": med("direct", "p50_us") / 1000,
        "direct_p99_ms": med("direct", "p99_us") / 1000,
        "proxy_p50_ms": med("proxy", "p50_us") / 1000,
        "proxy_p99_ms": med("proxy", "p99_us") / 1000,
        "ratio": statistics.median(ratios) if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "errors": sum(r["errors_total"] for side in ("direct", "proxy") for r in runs[side]),
        # Median CPU (percent of one core) per process group during the runs: where the cost goes.
        "cpu": {side: {g: statistics.median(r.get("cpu", {}).get(g, 0) for r in runs[side])
                       for g in sorted({g for r in runs[side] for g in r.get("cpu", {})})}
                for side in ("direct", "proxy")},
        "runs": runs,
    }


def fetch(flavour: str, url: str) -> dict:
    out = dexec(flavour, f"curl -sS -i --max-time 10 '{url}'", check=False)
    head, _sep, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers = {}
    for line in lines[1:]:
        name, _sep, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    return {
        "status": status,
        "body": body.strip(),
        "content_type": headers.get("content-type", ""),
        "cors": headers.get("access-control-allow-origin", ""),
        "cache_control": headers.get("cache-control", ""),
    }


def well_known(args: argparse.Namespace) -> dict:
    pairs = {
        f: (f"{DIRECT_URL}/.well-known/matrix/client", f"{WELL_KNOWN_PROXY_URL}/.well-known/matrix/client")
        for f in args.flavours
    }
    log("well-known: interleaved proxy vs Synapse")
    summary = interleaved(args, pairs, max(2, args.duration // 2))
    for flavour in args.flavours:
        docs = {}
        for doc in ("client", "server"):
            docs[doc] = {
                "proxy": fetch(flavour, f"{WELL_KNOWN_PROXY_URL}/.well-known/matrix/{doc}"),
                "synapse": fetch(flavour, f"{DIRECT_URL}/.well-known/matrix/{doc}"),
            }
        summary[flavour]["documents"] = docs
    return summary


def longpoll_once(flavour: str, base: str, count: int, args: argparse.Namespace, timeout: int = 0, extra: str = "") -> dict:
    timeout = timeout or args.longpoll_timeout
    script = (
        f"python3 {HELPERS}/longpoll.py --base {base} --cafile {CA_IN_CONTAINER} --count {count}"
        f" --timeout-ms {timeout * 1000} --ramp {args.longpoll_ramp} {extra}"
    )
    proc = sh(["docker", "exec", host(flavour), "sh", "-c", script], timeout=timeout * 3 + 300, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"count": count, "ok": False, "crash": (proc.stdout + proc.stderr)[-1500:]}


def longpolls(args: argparse.Namespace) -> dict:
    out: dict = {f: {"levels": {}, "max_ok": 0} for f in args.flavours}
    alive = list(args.flavours)
    for level in args.longpoll_levels:
        if not alive:
            break
        log(f"long-polls: {level} per flavour, held {args.longpoll_timeout} s, at once in: {', '.join(alive)}")
        with concurrent.futures.ThreadPoolExecutor(len(alive)) as pool:
            futures = {f: pool.submit(longpoll_once, f, PROXY_URL, level, args) for f in alive}
            for flavour, fut in futures.items():
                res = fut.result()
                if not res.get("ok") and len(alive) > 1:
                    # Opening N x flavours at once competes for the cores: retry
                    # a miss alone, so that it is the flavour's and not the run's.
                    log(f"long-polls {flavour} {level}: missed with others running ({res.get('errors')}), retrying alone")
                    res = {**longpoll_once(flavour, PROXY_URL, level, args), "first_try_together": res}
                out[flavour]["levels"][str(level)] = res
                log(f"long-polls {flavour} {level}: held {res.get('held')} errors {res.get('errors')} ok={res.get('ok')}")
                if res.get("ok"):
                    out[flavour]["max_ok"] = level
        alive = [f for f in alive if out[f]["levels"][str(level)].get("ok")]
    top = args.longpoll_levels[-1]
    log(f"long-polls: Synapse alone (direct) at {top}, in {host(args.flavours[0])}")
    out["direct"] = {"levels": {str(top): longpoll_once(args.flavours[0], DIRECT_URL, top, args)}}
    out["direct"]["max_ok"] = top if out["direct"]["levels"][str(top)].get("ok") else 0
    return out


def worker_layout() -> list[dict]:
    """matrix_workers of the workers container, from the benchmark's inventory (one source)."""
    import yaml  # pylint: disable=import-outside-toplevel  # the virtualenv's (Ansible's) PyYAML

    inventory = yaml.safe_load(INVENTORY.read_text(encoding="utf-8"))
    return inventory["matrix"]["hosts"][host(WORKERS)]["matrix_workers"]


# Requests of the routed-read runs each process logged (its access log lines,
# counted before and after): which processes served them.
def served_counts(layout: list[dict]) -> dict:
    logs = {"main": "/var/log/synapse/homeserver.log"}
    logs.update({w["name"]: f"/var/log/synapse/{w['name']}.log" for w in layout})
    pattern = "|".join(path for path, _auth in ROUTED_READS.values())
    script = "; ".join(f"echo {name} $(grep -cE '\"GET ({pattern}) ' {path} 2>/dev/null || echo 0)"
                       for name, path in logs.items())
    counts = {}
    for line in dexec(WORKERS, script).splitlines():
        name, _sep, count = line.partition(" ")
        counts[name] = int(count.split()[0]) if count.strip() else 0
    return counts


def tokens(target: str, count: int) -> list[str]:
    out = dexec(target, f"python3 {HELPERS}/longpoll.py --base {PROXY_URL} --cafile {CA_IN_CONTAINER}"
                        f" --tokens {count} --print-tokens")
    return json.loads(out.strip().splitlines()[-1])


def workers_phase(args: argparse.Namespace, results: dict) -> None:
    """Routed reads and idle long-polls: workers vs the single process, the same nginx in front."""
    out = results.setdefault("workers", {})
    layout = worker_layout()
    out["layout"] = layout
    token = {target: tokens(target, args.workers_tokens)[0] for target in (SINGLE, WORKERS)}
    before = served_counts(layout)
    runs: dict = {name: {"single": [], "workers": []} for name in ROUTED_READS}
    log(f"workers: routed reads, {args.rounds} interleaved rounds of {args.duration} s, {SINGLE} (single process)"
        f" vs {WORKERS}")
    for rnd in range(args.rounds):
        order = [(SINGLE, "single"), (WORKERS, "workers")]
        if rnd % 2:
            order.reverse()
        for name, (path, auth) in ROUTED_READS.items():
            for target, side in order:
                headers = [f"Authorization: Bearer {token[target]}"] if auth else []
                runs[name][side].append(wrk(target, PROXY_URL + path, args, args.duration, headers=headers))
            single, workers = runs[name]["single"][-1]["rps"], runs[name]["workers"][-1]["rps"]
            log(f"round {rnd + 1}/{args.rounds} {name}: single {single:.0f} req/s, workers {workers:.0f} req/s"
                f" ({workers / single:.2f}x)")
    after = served_counts(layout)
    out["served"] = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    out["reads"] = {}
    for name, sides in runs.items():
        summary = summarise({"direct": sides["single"], "proxy": sides["workers"]})
        summary["path"] = ROUTED_READS[name][0]
        out["reads"][name] = summary
    sync_ports = ",".join(str(w["port"]) for w in layout if w["type"] == "sync")
    count, hold = args.workers_longpolls, args.workers_longpoll_timeout
    out["longpoll"] = {}
    for target, side, ports in ((WORKERS, "workers", sync_ports), (SINGLE, "single", "8008")):
        log(f"workers: {count} idle long-polls through {host(target)} ({side}), held {hold} s")
        res = longpoll_once(target, PROXY_URL, count, args, timeout=hold,
                            extra=f"--tokens {args.workers_tokens} --count-ports {ports}")
        out["longpoll"][side] = res
        log(f"workers: long-polls {side}: held {res.get('held')} early {res.get('early_200')} errors {res.get('errors')}"
            f" ok={res.get('ok')} per port {res.get('port_peaks')}")


def versions(args: argparse.Namespace) -> dict:
    first = args.flavours[0]
    found = {
        "debian": dexec(first, "cat /etc/debian_version").strip(),
        "synapse": dexec(first, "curl -s http://127.0.0.1:8008/_synapse/admin/v1/server_version", check=False).strip(),
        "wrk": dexec(first, "dpkg-query -W -f '${Version}' wrk", check=False).strip(),
        "python_in_container": dexec(first, "python3 -V").strip(),
    }
    try:
        found["synapse"] = json.loads(found["synapse"])["server_version"]
    except (ValueError, KeyError):
        pass
    package = {"nginx": "nginx", "apache": "apache2", "caddy": "caddy", "haproxy": "haproxy"}
    for flavour in args.flavours:
        found[flavour] = dexec(flavour, f"dpkg-query -W -f '${{Version}}' {package[flavour]}", check=False).strip()
    return found


def machine() -> dict:
    mem_kb = 0
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg()[0],
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    results_path = Path(args.results)
    if args.report_only:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        report.emit(results, args.output)
        return 0
    started = time.monotonic()
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {
            "flavours": args.flavours,
            "quick": args.quick,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "threads": args.threads,
            "longpoll_levels": args.longpoll_levels,
            "longpoll_timeout_s": args.longpoll_timeout,
            "longpoll_ramp": args.longpoll_ramp,
            "converge_parallel": args.converge_parallel,
            "workers_longpolls": args.workers_longpolls,
            "workers_longpoll_timeout_s": args.workers_longpoll_timeout,
            "workers_tokens": args.workers_tokens,
        },
        "converge": {},
    }
    if args.merge and results_path.exists():
        earlier = json.loads(results_path.read_text(encoding="utf-8"))
        for phase, key in (("throughput", "throughput"), ("pinned", "pinned"), ("profile", "profile"),
                           ("wellknown", "well_known"),
                           ("longpoll", "longpoll"), ("workers", "workers")):
            if phase in args.skip and key in earlier:
                results[key] = earlier[key]
                # The run that measured it: an earlier --merge names it already.
                results.setdefault("merged_from", {})[key] = earlier.get("merged_from", {}).get(key) or (
                    f"{earlier['date']} (whole run {earlier.get('total_s', '-')} s; load average"
                    f" {earlier['machine'].get('loadavg_start', 0):.1f} at start,"
                    f" {earlier['machine'].get('loadavg_end', 0):.1f} at end)")
    if args.reuse and args.converge_results:
        earlier = json.loads(Path(args.converge_results).read_text(encoding="utf-8"))
        results["converge"] = earlier.get("converge", {})
        # A merged workers section keeps its own converge figures (they belong to its measurements).
        if earlier.get("workers", {}).get("converge") and "workers" not in results.get("merged_from", {}):
            results.setdefault("workers", {})["converge"] = earlier["workers"]["converge"]
        results["settings"]["converge_parallel"] = earlier["settings"].get("converge_parallel", False)
        results["settings"]["converge_from"] = earlier["settings"].get("converge_from") or earlier["date"]
        log(f"--reuse: converge figures of the run of {earlier['date']} ({args.converge_results})")
    elif args.reuse:
        log("--reuse: no setup, no timed converge")
    else:
        converge(args, results)
    tools(args)
    results["versions"] = versions(args)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if "throughput" not in args.skip:
        log(f"throughput: {args.rounds} interleaved rounds of {args.duration} s, {args.connections} connections")
        pairs = {f: (f"{DIRECT_URL}/_matrix/client/versions", f"{PROXY_URL}/_matrix/client/versions") for f in args.flavours}
        results["throughput"] = interleaved(args, pairs, args.duration)
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    if "pinned" not in args.skip and (os.cpu_count() or 1) >= 2:
        log(f"throughput, pinned (Synapse on core 0, proxy and wrk on core 1): {args.rounds} interleaved rounds")
        results["pinned"] = pinned_throughput(args)
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    if "profile" not in args.skip and (os.cpu_count() or 1) >= 2:
        log(f"profile: Synapse's requests per CPU second, pinned, in each flavour's container: {args.rounds} rounds")
        results["profile"] = synapse_profile(args)
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    if "wellknown" not in args.skip:
        results["well_known"] = well_known(args)
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    if "longpoll" not in args.skip:
        results["longpoll"] = longpolls(args)
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    if "workers" not in args.skip:
        workers_phase(args, results)
    results["machine"]["loadavg_end"] = os.getloadavg()[0]
    results["total_s"] = round(time.monotonic() - started)
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    log(f"results: {results_path} ({results['total_s']} s)")
    report.emit(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
