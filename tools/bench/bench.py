#!/usr/bin/env python3
"""kz-groups beside raw CouchDB (issue 9's targets P1-P8), one run on one machine.

Started by scripts/bench, which builds the release binary, installs the pinned load generator
(wrk) and, without COUCHDB_URL, starts the pinned CouchDB-compatible test server. This script
starts kz-groups three times (CouchDB with caches, CouchDB without, the embedded store),
provisions an account through the CLI and the API, drives each figure with wrk, alternating
service and raw CouchDB, and prints every figure with its ratio. It is a benchmark: it asserts
nothing and fails only when something cannot run.
"""
import argparse
import base64
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

# P1 and P2 keep the caches of what every request needs (tokens, accounts, keys: the `token`
# and `auth` caches of README "Caches"), as the targets say: only the group (or the
# page) comes from CouchDB.
DOCS_OFF = {"KZ_GROUPS_DOC_CACHE_ENTRIES": "0"}
LISTINGS_OFF = {"KZ_GROUPS_LISTING_CACHE_ENTRIES": "0"}
# P4's raw writes: not an account database, so no kz-groups instance follows it.
RAW_DB = f"kz_bench_raw_{os.getpid()}"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Http:
    """Tiny JSON-over-HTTP client with basic auth taken out of the URL."""

    def __init__(self, base):
        parts = urllib.parse.urlsplit(base)
        self.auth = None
        if parts.username:
            creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.auth = "Basic " + base64.b64encode(creds.encode()).decode()
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def headers(self, extra=None):
        h = {"Content-Type": "application/json"}
        if self.auth:
            h["Authorization"] = self.auth
        h.update(extra or {})
        return h

    def call(self, method, path, body=None, headers=None, timeout=600):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers(headers))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


class Server:
    """kz-groups serve, on a port it picks, with extra environment."""

    def __init__(self, binary, env, name):
        self.name = name
        full = dict(os.environ)
        full.update(env)
        full.update({"KZ_GROUPS_LISTEN": "127.0.0.1:0", "RUST_LOG": "warn,kz_groups::startup=info",
                     "KZ_GROUPS_NODE": "kz-groups@bench"})
        self.proc = subprocess.Popen([binary, "serve"], env=full, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.port = None
        for line in self.proc.stderr:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise SystemExit(f"{name}: kz-groups did not start")
        # Keep reading the log so the process never blocks on a full pipe.
        import threading
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.base = f"http://127.0.0.1:{self.port}"

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def reset_peak(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cli(binary, env, *args):
    full = dict(os.environ)
    full.update(env)
    full["RUST_LOG"] = "warn"
    out = subprocess.run([binary, *args], env=full, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kz-groups {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip() else {}


def provision(binary, env, base, name):
    """An account and its token, through the CLI and api_auth."""
    account = cli(binary, env, "accounts", "create", "--name", name)
    status, body = Http(base).call("PUT", "/v2/api_auth", {"data": {"api_key": account["api_key"]}})
    if status != 201:
        raise SystemExit(f"api_auth answered {status}: {body[:300]}")
    return account["account_id"], json.loads(body)["auth_token"]


def wrk(url, seconds, connections, headers=(), script=None):
    """Requests per second and the p99 latency in ms, as wrk measures them."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for h in headers:
        cmd[1:1] = ["-H", h]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        log(f"  warning: {non2xx.group(1)} non-2xx answers from {url}")
    return rps, float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")


def lua(method, body, extra_headers):
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(f'wrk.method = "{method}"\n')
    f.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
    for k, v in extra_headers.items():
        f.write(f'wrk.headers["{k}"] = "{v}"\n')
    f.close()
    return f.name


class Report:
    def __init__(self):
        self.rows = []

    def ratio(self, key, what, ours, theirs, target, unit="req/s"):
        r = ours / theirs if theirs else float("nan")
        self.ratio_of(key, what, f"{ours:,.0f} {unit}", f"{theirs:,.0f} {unit}", r, target)

    def durations(self, key, what, ours, theirs, target):
        """Two durations in seconds, the ratio as speed (theirs / ours)."""
        r = theirs / ours if ours else float("nan")
        self.ratio_of(key, what, f"{ours:.2f} s", f"{theirs:.2f} s", r, target)

    def ratio_of(self, key, what, ours, theirs, r, target):
        self.rows.append((key, what, ours, theirs, f"{r:.2f}x", f">= {target}x", r >= target))
        log(f"{key}: {ours} vs {theirs}: {r:.2f}x")

    def value(self, key, what, value, target, met):
        self.rows.append((key, what, value, "", "", target, met))
        log(f"{key}: {value}")

    def print(self):
        print()
        print(f"{'#':4} {'what':58} {'kz-groups':>16} {'raw CouchDB':>16} {'ratio':>7} {'target':>9}  met")
        for key, what, ours, theirs, ratio, target, met in self.rows:
            print(f"{key:4} {what:58} {ours:>16} {theirs:>16} {ratio:>7} {target:>9}  {'yes' if met else 'NO'}")


def best_of(n, f):
    """The best of n alternating rounds (a busy machine only ever slows a round down)."""
    return max(f() for _ in range(n))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--couchdb", required=True)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--groups", type=int, default=100_000, help="groups of the paginate=false account (P5)")
    p.add_argument("--only", default="", help="comma-separated figures to measure (P3 needs P1, P3b P2)")
    a = p.parse_args()
    only = {k.strip().upper() for k in a.only.split(",") if k.strip()}
    only |= {need for k, need in (("P3", "P1"), ("P3B", "P2"), ("P5B", "P5")) if k in only}
    want = lambda key: not only or key.upper() in only
    couch = Http(a.couchdb)
    couch_env = {"COUCHDB_URL": a.couchdb}
    data_dir = tempfile.mkdtemp(prefix="kz-bench-")
    embedded_env = {"COUCHDB_URL": "", "KZ_GROUPS_DATA": data_dir}
    cli(a.binary, couch_env, "init")
    report = Report()
    servers = []
    try:
        cached = Server(a.binary, couch_env, "cached"); servers.append(cached)
        docs_off = Server(a.binary, {**couch_env, **DOCS_OFF}, "doc cache off"); servers.append(docs_off)
        listings_off = Server(a.binary, {**couch_env, **LISTINGS_OFF}, "listing cache off"); servers.append(listings_off)
        embedded = Server(a.binary, embedded_env, "embedded"); servers.append(embedded)
        account, token = provision(a.binary, couch_env, cached.base, f"Bench {os.getpid()}")
        db = urllib.parse.quote(f"account/{account[0:2]}/{account[2:4]}/{account[4:]}", safe="")
        auth = [f"X-Auth-Token: {token}"]
        groups = f"/v2/accounts/{account}/groups"
        api = Http(cached.base)
        ids = []
        for i in range(60):
            status, body = api.call("PUT", groups, {"data": {"name": f"Group {i:03}", "endpoints": {}}},
                                    {"X-Auth-Token": token})
            ids.append(json.loads(body)["data"]["id"])
        gid = ids[0]
        raw_auth = [f"Authorization: {couch.auth}"] if couch.auth else []
        for s in servers[:3]:
            Http(s.base).call("GET", f"{groups}/{gid}", headers={"X-Auth-Token": token})
        sec, conns = a.seconds, a.connections
        run = lambda url, h, script=None: wrk(url, sec, conns, h, script)

        def versus_raw(key, what, ours_url, raw_url, target):
            """kz-groups against CouchDB's own answer; CouchDB's figure, for the cached ratios."""
            log(f"{key}: {what}")
            ours = best_of(a.rounds, lambda: run(ours_url, auth)[0])
            raw = best_of(a.rounds, lambda: run(raw_url, raw_auth)[0])
            report.ratio(key, what, ours, raw, target)
            return raw

        if want("P1"):
            p1_raw = versus_raw("P1", "GET of one group, doc cache off, vs raw doc GET",
                                docs_off.base + f"{groups}/{gid}", couch.base + f"/{db}/{gid}", 0.9)
        if want("P2"):
            p2_raw = versus_raw("P2", "listing page of 50, listing cache off, vs raw view",
                                listings_off.base + f"{groups}?page_size=50",
                                couch.base + f"/{db}/_design/groups/_view/crossbar_listing?limit=51", 0.9)

        if want("P3"):
            log("P3: GET one group, cached")
            ours = best_of(a.rounds, lambda: run(cached.base + f"{groups}/{gid}", auth)[0])
            report.ratio("P3", "GET of one group, cached, vs raw doc GET", ours, p1_raw, 20)
        if want("P3b"):
            log("P3b: a listing page of 50 of an unchanged account, cached")
            ours = best_of(a.rounds, lambda: run(cached.base + f"{groups}?page_size=50", auth)[0])
            report.ratio("P3b", "listing page of 50, cached, vs raw view", ours, p2_raw, 10)

        if want("P4"):
            log("P4: create vs CouchDB's PUT of the same document")
            doc = {"name": "Bench group", "endpoints": {}, "music_on_hold": {}}
            ours_script = lua("PUT", {"data": doc}, {"Content-Type": "application/json"})
            raw_doc = dict(doc, pvt_type="group", pvt_vsn="1", pvt_account_id=account)
            raw_script = lua("POST", raw_doc, {"Content-Type": "application/json"})
            # CouchDB's own figure is taken in a database no kz-groups instance follows: raw
            # groups written into the account's would be recorded in the group history (as
            # written behind kz-groups' back) while CouchDB is being measured.
            couch.call("PUT", f"/{RAW_DB}")
            ours = best_of(a.rounds, lambda: run(cached.base + groups, auth, ours_script)[0])
            raw = best_of(a.rounds, lambda: run(couch.base + f"/{RAW_DB}", raw_auth, raw_script)[0])
            couch.call("DELETE", f"/{RAW_DB}")
            report.ratio("P4", "create vs raw PUT of the same document", ours, raw, 0.85)

        if want("P5"):
            log(f"P5: paginate=false over {a.groups:,} groups (written straight into CouchDB)")
            big_account, big_token = provision(a.binary, couch_env, cached.base, f"Bench big {os.getpid()}")
            big_db = urllib.parse.quote(f"account/{big_account[0:2]}/{big_account[2:4]}/{big_account[4:]}", safe="")
            written = 0
            while written < a.groups:
                n = min(5000, a.groups - written)
                docs = [{"_id": f"g{written + i:08d}", "name": f"Group {written + i}", "pvt_type": "group",
                         "endpoints": {}, "pvt_account_id": big_account} for i in range(n)]
                status, _ = couch.call("POST", f"/{big_db}/_bulk_docs", {"docs": docs})
                written += n
            big_groups = f"/v2/accounts/{big_account}/groups?paginate=false"
            # The index is built once (a cold listing waits for it); both sides are then timed warm.
            Http(listings_off.base).call("GET", big_groups, headers={"X-Auth-Token": big_token})
            couch.call("GET", f"/{big_db}/_design/groups/_view/crossbar_listing?limit=1")
            listings_off.reset_peak()
            base_rss = listings_off.status("VmRSS")
            t = time.monotonic()
            status, body = Http(listings_off.base).call("GET", big_groups, headers={"X-Auth-Token": big_token})
            ours_time = time.monotonic() - t
            peak = listings_off.status("VmHWM")
            rows = len(json.loads(body)["data"]) if status == 200 else 0
            t = time.monotonic()
            couch.call("GET", f"/{big_db}/_design/groups/_view/crossbar_listing")
            raw_time = time.monotonic() - t
            report.value("P5", f"paginate=false, {rows:,} rows: peak RSS of the service",
                         f"{peak / 2**20:.1f} MB (from {base_rss / 2**20:.1f})", "< 64 MB", peak < 64 * 2**20)
            report.durations("P5b", f"paginate=false, {rows:,} rows: speed vs the raw view",
                             ours_time, raw_time, 0.8)

        if want("P6"):
            log("P6: embedded store GET vs the same process's /healthz")
            e_account, e_token = provision(a.binary, embedded_env, embedded.base, "Bench embedded")
            e_groups = f"/v2/accounts/{e_account}/groups"
            status, body = Http(embedded.base).call("PUT", e_groups, {"data": {"name": "Embedded", "endpoints": {}}},
                                                    {"X-Auth-Token": e_token})
            e_gid = json.loads(body)["data"]["id"]
            e_auth = [f"X-Auth-Token: {e_token}"]
            ours = best_of(a.rounds, lambda: run(embedded.base + f"{e_groups}/{e_gid}", e_auth)[0])
            health = best_of(a.rounds, lambda: run(embedded.base + "/healthz", [])[0])
            report.ratio("P6", "embedded store GET vs the same process's /healthz", ours, health, 0.5)

        if want("P7"):
            log("P7: a direct CouchDB write seen through the cache")
            lags = []
            for i in range(40):
                gid_i = ids[1 + i % 50]
                Http(cached.base).call("GET", f"{groups}/{gid_i}", headers={"X-Auth-Token": token})
                status, body = couch.call("GET", f"/{db}/{gid_i}")
                doc = json.loads(body)
                doc["name"] = f"Renamed {i}"
                couch.call("PUT", f"/{db}/{gid_i}", doc)
                written_at = time.monotonic()
                while True:
                    _, body = Http(cached.base).call("GET", f"{groups}/{gid_i}", headers={"X-Auth-Token": token})
                    if json.loads(body)["data"]["name"] == f"Renamed {i}":
                        lags.append(time.monotonic() - written_at)
                        break
                    if time.monotonic() - written_at > 30:
                        lags.append(30.0)
                        break
                    time.sleep(0.005)
            lags.sort()
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            report.value("P7", f"coherence: direct write seen through the cache ({len(lags)} writes)",
                         f"p99 {p99 * 1000:.0f} ms, median {statistics.median(lags) * 1000:.0f} ms",
                         "p99 < 1 s", p99 < 1.0)

        if want("P8"):
            log("P8: idle RSS after the run")
            time.sleep(3)
            rss = cached.status("VmRSS")
            report.value("P8", "idle RSS after the run (the cached instance)", f"{rss / 2**20:.1f} MB",
                         "<= 24 MB", rss <= 24 * 2**20)
    finally:
        for s in servers:
            s.stop()
    report.print()


if __name__ == "__main__":
    main()
