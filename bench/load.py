#!/usr/bin/env python3
"""Load harness: the gateway against the crypto floor and against nginx, in one run.

    python3 bench/load.py                        # full run (about 3 minutes)
    python3 bench/load.py --backend rustcrypto   # the same with the pure-Rust backend
    python3 bench/load.py --quick                # CI: short runs, checks 2xx and decrypted replies only

On 127.0.0.1 only, it starts a fast upstream (examples/bench_upstream.rs: plain hyper,
a fixed reply that echoes nothing), nginx as a reverse proxy in front of it (keepalive to
the upstream) in four configurations, a hyper-only proxy (examples/bare_proxy.rs: the
gateway's hyper server and threading with nothing in between; its upstream side is
hyper-util's pooled client, 2h, which the gateway used until commit 2fe3c0f, or per-worker
HTTP/1 connections like the gateway's own, 2l), and the gateway
twice: at its defaults (log level info, one access-log line per request, to a file) and
with its log off (RUST_LOG=warn). It installs nginx and wrk from Debian if they are
missing. The same wrk settings drive these scenarios:

  1  upstream directly
  2  nginx, its defaults: 1 worker, access log on     3  gateway plaintext, its defaults
  2a nginx, workers auto, access log on               3q gateway plaintext, log off
  2b nginx, 1 worker, access log off                  4  gateway encrypted 1 KiB (defaults)
  2c nginx, workers auto, access log off              5  gateway encrypted 1 MiB
  2h hyper-only proxy, plaintext                      6  16 concurrent 16 MiB encrypted
  2l hyper-only proxy with per-worker HTTP/1 upstream connections (`--pool local`)

Both access logs go to a file in the run's folder, in each program's default line format.
Every gateway/nginx ratio is printed; the target pair is defaults against defaults (3 / 2).

Encrypted scenarios send a pool of pre-sealed requests (sealed before the run by
`hpke-gateway seal`), so the load generator's own crypto is not measured. The CPU time
of the proxy under test (nginx's workers, the hyper-only proxy, the gateway; user and
system apart) comes from /proc/PID/stat, the gateway's peak RSS from VmHWM (reset before each scenario
through /proc/PID/clear_refs). The crypto floor per encrypted request is measured in the
same run by the envelope bench's baselines for the backend under test (`cargo bench -p
hpke-envelope --bench envelope -- baseline`): 3 X25519 multiplications (1 decapsulation +
1 encapsulation) + AES-256-GCM of both bodies, with that backend's primitives.

Writes bench/results/load.json (load-rustcrypto.json for the pure-Rust backend) and a
.png beside it, and prints one table.
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
GATEWAY = os.path.join(TARGET, "release", "hpke-gateway")
UPSTREAM = os.path.join(TARGET, "release", "examples", "bench_upstream")
BARE = os.path.join(TARGET, "release", "examples", "bare_proxy")
HPKE = "application/octet-stream+hpke"
ACCOUNT = "ACCT-BENCH"
KIB, MIB = 1024, 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# The shipped build, and the pure-Rust backend (a feature set of its own).
BACKENDS = {
    "aws-lc": [],
    "rustcrypto": ["--no-default-features", "--features", "intake"],
}
# The envelope bench's floor for each backend: the package's features.
BENCH_FEATURES = {"aws-lc": ["--features", "aws-lc"], "rustcrypto": []}


def ensure_tools(backend):
    missing = [p for p, b in (("nginx", "nginx"), ("wrk", "wrk")) if shutil.which(b) is None]
    if missing:
        log(f"installing {' '.join(missing)} from Debian")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *missing], stdout=subprocess.DEVNULL)
    log("building the gateway and the bench upstream (release)")
    run(["cargo", "build", "--release", "--locked", *BACKENDS[backend], "--bin", "hpke-gateway",
         "--example", "bench_upstream", "--example", "bare_proxy"], cwd=ROOT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.025)
    # Stopped here, so a process that never listened is not left behind (nginx's
    # workers go with their master).
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    raise SystemExit(f"{what} did not listen on {port}")


# === processes ===

def start_upstream(port):
    p = subprocess.Popen([UPSTREAM, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    wait_port(port, p, "upstream")
    return p


def start_bare(port, upstream_port, pool):
    p = subprocess.Popen([BARE, f"127.0.0.1:{port}", f"http://127.0.0.1:{upstream_port}",
                          "--pool", pool], stderr=subprocess.DEVNULL)
    wait_port(port, p, "hyper-only proxy")
    return p


def start_nginx(work, name, port, upstream_port, workers, access_log):
    """nginx as a reverse proxy; `access_log` on writes nginx's default line (the
    `combined` format) per request to a file, as its default configuration does."""
    work = os.path.join(work, name)
    os.makedirs(work)
    conf = os.path.join(work, "nginx.conf")
    log_line = f"access_log {work}/access.log combined;" if access_log else "access_log off;"
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    {log_line}
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    client_max_body_size 64m;
    upstream api {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    wait_port(port, p, "nginx")
    return p


def make_keys(work):
    server = os.path.join(work, "server-1.pem")
    customer = os.path.join(work, "customer.pem")
    run([GATEWAY, "keygen", "--out", server], stderr=subprocess.DEVNULL)
    run([GATEWAY, "keygen", "--out", customer], stderr=subprocess.DEVNULL)
    for key, out in ((server, "server-1.pub.pem"), (customer, "customer.pub.pem")):
        with open(os.path.join(work, out), "wb") as f:
            f.write(run([GATEWAY, "public-key", "--key", key], capture_output=True).stdout)
    return server, customer


def start_gateway(work, name, port, admin_port, upstream_port, log_level):
    """The gateway; `log_level` None is its default (RUST_LOG unset: info, one access-log
    line per request); its log goes to a file, like nginx's."""
    config = os.path.join(work, f"{name}.toml")
    with open(config, "w") as f:
        f.write(f"""listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{upstream_port}"
admin_listen = "127.0.0.1:{admin_port}"
max_encrypted_body_bytes = {64 * MIB}
max_response_body_bytes = {64 * MIB}
# 16 requests of 16 MiB each way hold 512 MiB: the scenario measures throughput, not the
# budget (whose default, 256 MiB with these limits, would answer some of them 503).
buffer_budget_bytes = {1024 * MIB}

[[server_keys]]
id = 1
private_key = "server-1.pem"

[[accounts]]
id = "{ACCOUNT}"
encryption = true
public_keys = ["customer.pub.pem"]
""")
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    if log_level:
        env["RUST_LOG"] = log_level
    with open(os.path.join(work, f"{name}.log"), "w") as log_file:
        p = subprocess.Popen([GATEWAY, "serve", "--config", config], stderr=log_file, env=env)
    wait_port(port, p, "gateway")
    return p


def startup_ms(work, upstream_port):
    """Exec to accepting connections, with 20 accounts and 3 server keys (median of 5)."""
    d = os.path.join(work, "startup")
    os.makedirs(d)
    text = f'listen = "127.0.0.1:{{port}}"\nupstream = "http://127.0.0.1:{upstream_port}"\nadmin_listen = "off"\n'
    for i in range(1, 4):
        run([GATEWAY, "keygen", "--out", os.path.join(d, f"s{i}.pem")], stderr=subprocess.DEVNULL)
        text += f'[[server_keys]]\nid = {i}\nprivate_key = "s{i}.pem"\n'
    for i in range(20):
        key = os.path.join(d, f"a{i}.pem")
        run([GATEWAY, "keygen", "--out", key], stderr=subprocess.DEVNULL)
        fmt = ("pem", "raw", "tink-json")[i % 3]
        with open(os.path.join(d, f"a{i}.pub"), "wb") as f:
            f.write(run([GATEWAY, "public-key", "--key", key, "--format", fmt], capture_output=True).stdout)
        text += f'[[accounts]]\nid = "A{i}"\nencryption = true\npublic_keys = ["a{i}.pub"]\n'
    times = []
    for _ in range(5):
        port = free_port()
        config = os.path.join(d, "gateway.toml")
        with open(config, "w") as f:
            f.write(text.replace("{port}", str(port)))
        t0 = time.perf_counter()
        p = subprocess.Popen([GATEWAY, "serve", "--config", config], stderr=subprocess.DEVNULL)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if p.poll() is not None or time.perf_counter() - t0 > 10:
                    p.kill()
                    raise SystemExit("the start-up measurement's gateway did not come up")
                time.sleep(0.0005)
        times.append((time.perf_counter() - t0) * 1e3)
        p.terminate()
        p.wait()
    return sorted(times)[len(times) // 2]


# === /proc ===

def cpu_split(pid):
    """(user, system) CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def children_cpu():
    """CPU seconds of this script's finished children (wrk runs as one)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def children(pid):
    """nginx's workers: the master's child processes."""
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(c) for c in f.read().split()]
    return kids


def reset_peak_rss(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# === wrk ===

LUA = r"""
local files = {FILES}
local bodies = {}
local n = 0
init = function(args)
  for i, path in ipairs(files) do
    local f = io.open(path, "rb"); bodies[i] = f:read("*a"); f:close()
  end
end
request = function()
  n = n + 1
  local body = nil
  if #bodies > 0 then body = bodies[(n % #bodies) + 1] end
  return wrk.format("{METHOD}", "{PATH}", {HEADERS}, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    '\nRESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def lua_table(items):
    return "{" + ", ".join(items) + "}"


def wrk(work, name, port, path, connections, duration, files=(), encrypted=False):
    headers = {"X-CleverTap-Account-Id": ACCOUNT, "X-CleverTap-Passcode": "bench"}
    if encrypted:
        headers.update({"Content-Type": HPKE, "Accept": HPKE})
    elif files:
        headers["Content-Type"] = "application/json"
    script = LUA.replace("{FILES}", lua_table(json.dumps(f) for f in files)) \
        .replace("{METHOD}", "POST" if files else "GET") \
        .replace("{PATH}", path) \
        .replace("{HEADERS}", lua_table(f'["{k}"] = "{v}"' for k, v in headers.items()))
    script_path = os.path.join(work, f"{name}.lua")
    with open(script_path, "w") as f:
        f.write(script)
    threads = min(2, connections)
    out = run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "60s",
               "-s", script_path, f"http://127.0.0.1:{port}{path}"],
              capture_output=True, text=True).stdout
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise SystemExit(f"{name}: wrk printed no result:\n{out}")
    return json.loads(m.group(1))


def seal_pool(work, name, size, count, server_pub):
    files = []
    for i in range(count):
        plain = os.urandom(size)
        sealed = run([GATEWAY, "seal", "--recipient", server_pub, "--info", ACCOUNT],
                     input=plain, capture_output=True).stdout
        path = os.path.join(work, f"{name}-{i}.bin")
        with open(path, "wb") as f:
            f.write(sealed)
        files.append(path)
    return files


def check_decrypted_reply(port, path, body_file, customer_key, size):
    """One request outside the load: the reply must be sealed to the customer and decrypt."""
    with open(body_file, "rb") as f:
        body = f.read()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": HPKE, "Accept": HPKE,
                                          "X-CleverTap-Account-Id": ACCOUNT,
                                          "X-CleverTap-Passcode": "bench"})
    with urllib.request.urlopen(req, timeout=60) as res:
        assert res.status == 200 and res.headers["Content-Type"] == HPKE, res.status
        sealed = res.read()
    plain = run([GATEWAY, "open", "--key", customer_key, "--info", ACCOUNT],
                input=sealed, capture_output=True).stdout
    assert len(plain) == size and plain.startswith(b'{"status":"success"'), len(plain)


# === the crypto floor ===

def criterion_median_ns(bench_id):
    path = os.path.join(TARGET, "criterion", bench_id, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def crypto_floor(backend, sizes, quick):
    """The shipped primitives' cost, measured now: µs per encrypted request of each size
    (3 X25519 + AES-256-GCM of both bodies), and one core's AES-256-GCM in MB/s at 16 MiB.
    In quick mode, only what an earlier bench left behind (None if nothing)."""
    prefix = "baseline_aws-lc_" if backend == "aws-lc" else "baseline_"
    ids = [f"{prefix}x25519_dh"] + [f"{prefix}aes256gcm/{n}" for n in sizes]
    if not quick:
        log(f"measuring the crypto floor ({backend}): the envelope bench's baselines")
        done = subprocess.run(["cargo", "bench", "--locked", "-p", "hpke-envelope",
                               *BENCH_FEATURES[backend], "--bench", "envelope", "--",
                               "--quick", "baseline"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            # The load figures are still worth writing: report them without the floor.
            log(f"the envelope bench failed, so no crypto floor this run:\n{done.stderr[-2000:]}")
            return None
    if any(criterion_median_ns(i) is None for i in ids):
        return None
    dh = criterion_median_ns(ids[0])
    aes = {n: criterion_median_ns(f"{prefix}aes256gcm/{n}") for n in sizes}
    return {
        "dh_us": dh / 1e3,
        "per_request_us": {n: (3 * dh + 2 * aes[n]) / 1e3 for n in sizes},
        "aes256gcm_16MiB_MBps": 16 * MIB / (aes["16MiB"] / 1e3),
    }


# === the run ===

PLAIN = "/1/upload?size=1024"
SCENARIOS = [
    # key, name, target, path, body size, encrypted, connections (full), duration (full)
    ("1", "upstream direct", "upstream", PLAIN, 1 * KIB, False, 64, 10),
    ("2", "nginx defaults (1 worker, log on)", "nginx", PLAIN, 1 * KIB, False, 64, 10),
    ("2a", "nginx auto workers, log on", "nginx_auto", PLAIN, 1 * KIB, False, 64, 10),
    ("2b", "nginx 1 worker, log off", "nginx_quiet", PLAIN, 1 * KIB, False, 64, 10),
    ("2c", "nginx auto workers, log off", "nginx_auto_quiet", PLAIN, 1 * KIB, False, 64, 10),
    ("2h", "hyper-only proxy", "bare", PLAIN, 1 * KIB, False, 64, 10),
    ("2l", "hyper-only, per-worker http1", "bare_local", PLAIN, 1 * KIB, False, 64, 10),
    ("3", "gateway plaintext, defaults", "gateway", PLAIN, 1 * KIB, False, 64, 10),
    ("3q", "gateway plaintext, log off", "gateway_quiet", PLAIN, 1 * KIB, False, 64, 10),
    ("4", "gateway encrypted 1KiB", "gateway", PLAIN, 1 * KIB, True, 64, 10),
    ("5", "gateway encrypted 1MiB", "gateway", f"/1/upload?size={MIB}", MIB, True, 8, 10),
    ("6", "gateway 16x16MiB encrypted", "gateway", f"/1/upload?size={16 * MIB}", 16 * MIB, True, 16, 10),
]
NGINX = {  # target: (workers, access log)
    "nginx": (1, True), "nginx_auto": ("auto", True),
    "nginx_quiet": (1, False), "nginx_auto_quiet": ("auto", False),
}
GATEWAYS = {"gateway": None, "gateway_quiet": "warn"}  # target: RUST_LOG (None: unset)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs; check 2xx and decrypted replies only")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="aws-lc",
                    help="the gateway's crypto backend: aws-lc (the shipped default) or rustcrypto")
    args = ap.parse_args()

    ensure_tools(args.backend)
    if not args.quick:
        ensure_matplotlib()
    work = tempfile.mkdtemp(prefix="hpke-load-")
    procs = []
    try:
        targets = ["upstream", "bare", "bare_local", *NGINX, *GATEWAYS]
        ports = {k: free_port() for k in targets}
        admin_ports = {k: free_port() for k in GATEWAYS}
        upstream = start_upstream(ports["upstream"])
        procs.append(upstream)
        nginxes = {}
        for name, (workers, access_log) in NGINX.items():
            nginxes[name] = start_nginx(work, name, ports[name], ports["upstream"], workers, access_log)
            procs.append(nginxes[name])
        bare = start_bare(ports["bare"], ports["upstream"], "legacy")
        procs.append(bare)
        bare_local = start_bare(ports["bare_local"], ports["upstream"], "local")
        procs.append(bare_local)
        server_key, customer_key = make_keys(work)
        gateways = {}
        for name, level in GATEWAYS.items():
            gateways[name] = start_gateway(work, name, ports[name], admin_ports[name], ports["upstream"], level)
            procs.append(gateways[name])
        gateway = gateways["gateway"]
        # Whose CPU each scenario measures: the proxy under test (nginx: its workers).
        proxy_pids = {"bare": lambda: [bare.pid], "bare_local": lambda: [bare_local.pid],
                      "upstream": lambda: []}
        for name, p in nginxes.items():
            proxy_pids[name] = lambda p=p: children(p.pid)
        for name, p in gateways.items():
            proxy_pids[name] = lambda p=p: [p.pid]
        time.sleep(0.3)
        idle_rss_kib = rss_kib(gateway.pid, "VmRSS")
        server_pub = os.path.join(work, "server-1.pub.pem")
        plain_1k = os.path.join(work, "plain-1k.json")
        with open(plain_1k, "wb") as f:
            f.write(b'{"d":[' + b'{"identity":"1"},' * 60 + b'{"identity":"2"}]}')

        rows = []
        for key, name, target, path, size, encrypted, conns, dur in SCENARIOS:
            if args.quick:
                conns, dur = min(conns, 4), 1
            pool = []
            if encrypted:
                count = 4 if size >= 16 * MIB or args.quick else 32
                pool = seal_pool(work, f"s{key}", size, count, server_pub)
            elif path.startswith("/1/upload"):
                pool = [plain_1k]
            pids = proxy_pids[target]()
            cpu0 = [cpu_split(p) for p in pids]
            # The rest of the machine's work: the upstream, and wrk (a child of this script).
            others0 = sum(cpu_split(upstream.pid)), children_cpu()
            is_gateway = target in gateways
            if is_gateway:
                reset_peak_rss(gateways[target].pid)
            log(f"{key} {name}: wrk -c{conns} -d{dur}s")
            r = wrk(work, f"s{key}", ports[target], path, conns, dur, pool, encrypted)
            cpu1 = [cpu_split(p) for p in pids]
            upstream_cpu = sum(cpu_split(upstream.pid)) - others0[0]
            wrk_cpu = children_cpu() - others0[1]
            user = sum(b[0] - a[0] for a, b in zip(cpu0, cpu1))
            system = sum(b[1] - a[1] for a, b in zip(cpu0, cpu1))
            peak = rss_kib(gateways[target].pid, "VmHWM") if is_gateway else None
            if r["requests"] == 0 or r["non2xx"] or r["errors"]:
                raise SystemExit(f"{name}: {r['requests']} requests, {r['non2xx']} non-2xx, {r['errors']} errors")
            if encrypted:
                check_decrypted_reply(ports[target], path, pool[0], customer_key, size)
            secs = r["duration_us"] / 1e6
            rows.append({
                "key": key, "scenario": f"{key} {name}", "target": target, "body_bytes": size,
                "encrypted": encrypted, "connections": conns, "requests": r["requests"],
                "rps": r["requests"] / secs,
                "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3, "p999_ms": r["p999_us"] / 1e3,
                "proxy_cpu_us_per_req": (user + system) / r["requests"] * 1e6 if pids else None,
                "proxy_user_us_per_req": user / r["requests"] * 1e6 if pids else None,
                "proxy_sys_us_per_req": system / r["requests"] * 1e6 if pids else None,
                "upstream_cpu_us_per_req": upstream_cpu / r["requests"] * 1e6,
                "wrk_cpu_us_per_req": wrk_cpu / r["requests"] * 1e6,
                "gateway_peak_rss_mib": peak / 1024 if peak is not None else None,
            })
        dropped = dropped_log_lines(admin_ports["gateway"])
        start_ms = startup_ms(work, ports["upstream"])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    report(args, rows, idle_rss_kib, start_ms, dropped)


def dropped_log_lines(admin_port):
    """The default gateway's count of access-log lines dropped for a full queue."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as res:
        text = res.read().decode()
    m = re.search(r"^hpke_gateway_log_lines_dropped_total (\d+)", text, re.M)
    if not m:
        raise SystemExit("the gateway's /metrics has no hpke_gateway_log_lines_dropped_total")
    return int(m.group(1))


def report(args, rows, idle_rss_kib, start_ms, dropped_log_lines):
    by = {r["key"]: r for r in rows}
    floor = crypto_floor(args.backend, ["1KiB", "1MiB", "16MiB"], args.quick)
    ratios = {}
    # Every gateway/nginx pair; the target is defaults against defaults (3 / 2).
    for g, g_name in (("3", "gateway_defaults"), ("3q", "gateway_log_off")):
        for n, n_name in (("2", "nginx_defaults_1w_log"), ("2a", "nginx_auto_log"),
                          ("2b", "nginx_1w_log_off"), ("2c", "nginx_auto_log_off")):
            ratios[f"{g_name}_vs_{n_name}_rps"] = by[g]["rps"] / by[n]["rps"]
            ratios[f"{g_name}_vs_{n_name}_p99"] = by[g]["p99_ms"] / by[n]["p99_ms"]
    ratios.update({
        "gateway_log_off_vs_defaults_rps": by["3q"]["rps"] / by["3"]["rps"],
        "gateway_encrypted_1KiB_vs_plain_rps": by["4"]["rps"] / by["3"]["rps"],
        # The same hyper server and client with nothing in between: how much of the gap
        # to nginx is the hyper stack's, and how much the gateway's own layers'.
        "hyper_only_vs_nginx_1w_log_off_rps": by["2h"]["rps"] / by["2b"]["rps"],
        "gateway_log_off_vs_hyper_only_rps": by["3q"]["rps"] / by["2l"]["rps"],
        # Issue 14's upstream experiment: per-worker hyper::client::conn::http1
        # connections against hyper-util's pooled client, both with nothing else around.
        "hyper_only_per_worker_http1_vs_pooled_client_rps": by["2l"]["rps"] / by["2h"]["rps"],
        "hyper_only_per_worker_http1_vs_pooled_client_cpu": (
            by["2l"]["proxy_cpu_us_per_req"] / by["2h"]["proxy_cpu_us_per_req"]),
    })
    for k in ("2", "2a", "2b", "2c", "2h", "2l", "3", "3q"):
        ratios[f"plain_cpu_us_per_req_{by[k]['target']}"] = by[k]["proxy_cpu_us_per_req"]
    if floor:
        ratios["cpu_per_encrypted_1KiB_vs_crypto_floor"] = by["4"]["proxy_cpu_us_per_req"] / floor["per_request_us"]["1KiB"]
        ratios["crypto_floor"] = floor
    # 16 MiB each way per request: payload throughput of scenario 6, both directions.
    ratios["encrypted_16MiB_payload_MBps"] = by["6"]["rps"] * 2 * 16 * MIB / 1e6
    # The same payload per second of the gateway's own CPU, and the most this machine
    # could show with a gateway that cost nothing: wrk and the upstream also move 32 MiB
    # per request on the same cores.
    six = by["6"]
    ratios["encrypted_16MiB_payload_MB_per_gateway_cpu_s"] = 2 * 16 * MIB / six["proxy_cpu_us_per_req"]
    others_us = six["upstream_cpu_us_per_req"] + six["wrk_cpu_us_per_req"]
    ratios["encrypted_16MiB_ceiling_MBps_with_a_free_gateway"] = (os.cpu_count() or 1) * 2 * 16 * MIB / others_us
    if floor:
        half = floor["aes256gcm_16MiB_MBps"] / 2
        ratios["encrypted_16MiB_payload_vs_half_a_core_of_aes256gcm"] = ratios["encrypted_16MiB_payload_MBps"] / half
        ratios["encrypted_16MiB_per_gateway_cpu_s_vs_half_a_core_of_aes256gcm"] = \
            ratios["encrypted_16MiB_payload_MB_per_gateway_cpu_s"] / half
    in_flight_mib = 16 * 16 * 2  # 16 requests, 16 MiB each way
    ratios["peak_rss_16x16MiB_limit_mib"] = 20 + 1.5 * in_flight_mib

    print("\n(CPU: the proxy under test, from /proc: nginx's workers, the hyper-only proxy, or the gateway; "
          "peak RSS: the gateway's)")
    print(f"{'scenario':32} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9} {'CPU µs/req':>11} {'user+sys':>17} {'peak RSS MiB':>13}")
    for r in rows:
        cpu = f"{r['proxy_cpu_us_per_req']:.1f}" if r["proxy_cpu_us_per_req"] is not None else "-"
        split = (f"{r['proxy_user_us_per_req']:.1f}+{r['proxy_sys_us_per_req']:.1f}"
                 if r["proxy_cpu_us_per_req"] is not None else "-")
        rss = f"{r['gateway_peak_rss_mib']:.1f}" if r["gateway_peak_rss_mib"] is not None else "-"
        print(f"{r['scenario']:32} {r['rps']:>10.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['p999_ms']:>9.2f} {cpu:>11} {split:>17} {rss:>13}")
    print(f"\ngateway idle RSS: {idle_rss_kib / 1024:.1f} MiB")
    print(f"access-log lines the default gateway dropped (hpke_gateway_log_lines_dropped_total): {dropped_log_lines}")
    print(f"start-up to accepting connections, 20 accounts and 3 server keys: {start_ms:.1f} ms (median of 5)")
    for k, v in ratios.items():
        if isinstance(v, float):
            print(f"{k}: {v:.2f}")
    if floor:
        print(f"crypto floor ({args.backend}) per encrypted request (3 DH + AES-GCM both ways), µs: "
              + ", ".join(f"{k} {v:.1f}" for k, v in floor["per_request_us"].items())
              + f"; one DH {floor['dh_us']:.1f} µs; one core's AES-256-GCM at 16 MiB: "
              + f"{floor['aes256gcm_16MiB_MBps']:.0f} MB/s")
    if args.quick:
        print("\nquick mode: every scenario answered 2xx and encrypted replies decrypted (timings not meaningful)")
        return
    os.makedirs(args.out, exist_ok=True)
    result = {"machine": machine(), "backend": args.backend, "idle_rss_mib": idle_rss_kib / 1024,
              "startup_ms": start_ms, "dropped_log_lines": dropped_log_lines, "rows": rows, "ratios": ratios}
    stem = "load" + ("" if args.backend == "aws-lc" else f"-{args.backend}")
    with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    charted = chart(rows, os.path.join(args.out, f"{stem}.png"))
    print(f"\nwrote {os.path.join(args.out, stem)}.json" + (" and .png" if charted else " (no chart)"))


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def ensure_matplotlib():
    """Installs the pinned matplotlib (bench/requirements.txt) when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("installing matplotlib (bench/requirements.txt) for the chart")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check",
                               "-r", os.path.join(ROOT, "bench", "requirements.txt")])
        if done.returncode != 0:
            log("pip could not install matplotlib: the run goes on without a chart")


def chart(rows, path):
    """The latency percentiles per scenario as a PNG; returns whether it was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing (pip install -r bench/requirements.txt): no chart")
        return False
    fig, ax = plt.subplots(figsize=(10, 5))
    names = [r["scenario"] for r in rows]
    width = 0.27
    for i, (key, label) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))):
        ax.bar([x + (i - 1) * width for x in range(len(rows))], [r[key] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("hpke-gateway load harness: latency percentiles per scenario")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


if __name__ == "__main__":
    main()
