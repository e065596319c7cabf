#!/usr/bin/env python3
"""Checks the operator pack's queries against what kz-groups really exports (issue 20).

- The Grafana dashboard (deploy/grafana/kz-groups.json) is importable: a Prometheus data-source
  variable, every panel and query on it, unique panel ids, every selector filtered by the `job`
  and `instance` variables.
- Every query of the dashboard (its Grafana variables given values) and every alert expression
  is parsed by promtool: each is written as a recording rule and `promtool check rules` reads them.
- The real binary is started on an embedded store of its own (with KZ_GROUPS_AMQP_URL, so the bus
  is on), given a little traffic (an account and a user made with the CLI, a login, group
  writes and reads, a conflict), and scraped. Every metric name a query or a rule uses must be
  in that scrape, and every label it matches or groups by must be one of that metric's labels
  (or `job`/`instance`, which Prometheus adds; `up` is Prometheus' own series). The values of
  `route` and `kind` matchers must be names the README documents.
- With `--prometheus`, a real Prometheus scrapes that process (as the README's scrape
  configuration does, job `kz-groups`) while more traffic comes, and evaluates every query and
  rule: each must evaluate without an error (many-to-many matches and the like only show there).
- The same process then gets SIGTERM and must exit 0 within a few seconds.

Standard library only. Run by scripts/check-operator-pack, which installs promtool first.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "kz-groups.json")
RULES = os.path.join(ROOT, "deploy", "prometheus", "kz-groups-rules.yml")
README = os.path.join(ROOT, "README.md")

# Labels Prometheus gives every scraped series, and series it makes itself.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_SERIES = {"up": TARGET_LABELS}
# What the dashboard's Grafana variables stand for when promtool parses a query.
GRAFANA_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${job}": ".*",
    "$job": ".*",
    "${instance}": ".*",
    "$instance": ".*",
}

errors = []


def fail(message):
    errors.append(message)


# ---- PromQL, lexically: enough to find every selector, its matchers and the grouping labels.

TOKEN = re.compile(
    r"""\s+
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<number>\d[\w.]*)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<brace>\{)
    |(?P<bracket>\[[^\]]*\])
    |(?P<other>.)""",
    re.X | re.S,
)
MATCHER = re.compile(r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?""")
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
AGGREGATIONS = {"sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values"}


def matchers_of(block):
    """`{a="x", b=~"y"}` -> [(label, op, value)]; anything else in it is an error."""
    inner, out, pos = block[1:-1], [], 0
    while pos < len(inner):
        m = MATCHER.match(inner, pos)
        if not m:
            raise ValueError(f"cannot read the matchers {block}")
        out.append((m.group(1), m.group(2), m.group(3)[1:-1]))
        pos = m.end()
    return out


def analyse(expr):
    """Every selector (metric name, matchers) and every label of by/without/on/ignoring/group_x."""
    selectors, grouping, pos = [], set(), 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            continue
        text = m.group(kind)
        rest = expr[pos:].lstrip()
        if kind == "ident":
            word = text.lower()
            if word in GROUPING and rest.startswith("("):
                close = rest.index(")")
                grouping |= {l.strip() for l in rest[1:close].split(",") if l.strip()}
                pos = len(expr) - len(rest) + close + 1
            elif word in KEYWORDS or rest.startswith("("):
                pass  # an operator, or a function's name
            elif word in AGGREGATIONS and re.match(r"(by|without)\s*\(", rest):
                pass  # `sum by (…) (…)`
            else:
                matchers = []
                if rest.startswith("{"):
                    close = rest.index("}")
                    matchers = matchers_of(rest[: close + 1])
                    pos = len(expr) - len(rest) + close + 1
                selectors.append((text, matchers))
        elif kind == "brace":
            raise ValueError(f"a selector without a metric name in {expr!r}")
    return selectors, grouping


def grafana_expr(expr):
    for var, value in GRAFANA_VALUES.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise ValueError(f"a Grafana variable this check does not know in {expr!r}")
    return expr


# ---- The dashboard and the rules: where the expressions are.


def dashboard_queries(dash):
    """[(where, expression as written, legend)] of every panel query and variable query."""
    queries = []
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail("dashboard: needs a variable `datasource` of type datasource, query prometheus")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            fail(f"dashboard: needs a query variable `{name}`")
            continue
        if v.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"dashboard: variable {name} must query the data source ${{datasource}}")
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        if not m or m.group(2) != name:
            fail(f"dashboard: variable {name} must be label_values(<selector>, {name}), not {q!r}")
            continue
        queries.append((f"variable {name}", m.group(1), ""))
    ids = set()

    def walk(panels):
        for p in panels:
            where = f"panel {p.get('title')!r}"
            if p.get("id") in ids:
                fail(f"dashboard: {where}: panel id {p.get('id')} used twice")
            ids.add(p.get("id"))
            if "gridPos" not in p:
                fail(f"dashboard: {where}: no gridPos")
            if p.get("type") == "row":
                walk(p.get("panels", []))
                continue
            if p.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"dashboard: {where}: must use the data source ${{datasource}}")
            targets = p.get("targets") or []
            if not targets:
                fail(f"dashboard: {where}: no query")
            for t in targets:
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    fail(f"dashboard: {where} query {t.get('refId')}: must use ${{datasource}}")
                queries.append((f"{where} query {t.get('refId')}", t["expr"], t.get("legendFormat", "")))

    walk(dash.get("panels", []))
    return queries


def rule_expressions(text):
    """[(where, expression)] of the rules file, read without a YAML library: every `expr:` is a
    one-line value or a `|` block."""
    out, lines, i, alert = [], text.splitlines(), 0, None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- (alert|record): (\S+)", line)
        if m:
            alert = m.group(2)
        m = re.match(r"(\s*)expr: ?(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", ">", "|-", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((f"rule {alert}", " ".join(b for b in block if b)))
                continue
            out.append((f"rule {alert}", value.strip("'\"") if value[:1] in "'\"" else value))
        i += 1
    return out


def promtool_parses(promtool, expressions):
    """One recording rule per expression; promtool parses each as PromQL."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "expressions.yml")
        with open(path, "w") as f:
            f.write("groups:\n  - name: operator-pack-expressions\n    rules:\n")
            for n, (where, expr) in enumerate(expressions):
                f.write(f"      # {where}\n      - record: operator_pack:expression_{n}\n")
                f.write(f"        expr: {json.dumps(expr)}\n")
        run = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if run.returncode != 0:
            fail("promtool does not parse every expression:\n" + run.stdout + run.stderr
                 + "\n".join(f"  expression_{n}: {w}: {e}" for n, (w, e) in enumerate(expressions)))
        else:
            print(f"promtool parses all {len(expressions)} expressions")


# ---- The live service.


class Service:
    def __init__(self, binary, tmp, amqp_url):
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("COUCHDB_URL", "KZ_GROUPS_"))}
        self.env.update({
            "KZ_GROUPS_DATA": os.path.join(tmp, "data"),
            "KZ_GROUPS_LISTEN": "127.0.0.1:0",
            "KZ_GROUPS_NODE": "kz-groups@operator-pack-check",
            "KZ_GROUPS_AMQP_URL": amqp_url,
            "RUST_LOG": "warn,kz_groups::startup=info",
        })
        self.proc = subprocess.Popen([binary, "serve"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log, port = [], None
        deadline = time.time() + 60
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        if port is None:
            self.proc.kill()
            sys.exit("kz-groups did not start:\n" + "".join(self.log))
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        self.base = f"http://127.0.0.1:{port}"

    def cli(self, args, env=None):
        run = subprocess.run([self.binary, *args], env={**self.env, **(env or {})},
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            sys.exit(f"kz-groups {' '.join(args)} failed:\n{run.stderr}")
        return json.loads(run.stdout)

    def request(self, method, path, body=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Auth-Token"] = token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        """SIGTERM, as systemd stops it: the process must exit 0 within a few seconds."""
        started = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("kz-groups did not exit within 15 s of SIGTERM")
            return
        took = time.time() - started
        if code != 0:
            fail(f"kz-groups exited {code} on SIGTERM:\n" + "".join(self.log[-20:]))
        else:
            print(f"kz-groups exited 0 {took:.2f} s after SIGTERM")


def traffic(service, tmp, round=1):
    """Enough traffic for every metric family the pack reads to have a sample."""
    account = service.cli(["accounts", "create", "--name", f"Operator Pack {round}"])
    password = os.path.join(tmp, "password")
    with open(password, "w") as f:
        f.write("Secret1\n")
    service.cli(["users", "create", "--account", account["account_id"], "--username", "alice"],
                env={"KZ_GROUPS_USER_PASSWORD_FILE": password})
    status, body = service.request("PUT", "/v2/api_auth", {"data": {"api_key": account["api_key"]}})
    if status != 201:
        sys.exit(f"api_auth answered {status}: {body}")
    token = json.loads(body)["auth_token"]
    groups = f"/v2/accounts/{account['account_id']}/groups"
    wanted = [
        ("PUT", groups, {"data": {"id": "0123456789abcdef0123456789abcdef", "name": "Sales"}}, 201),
        ("PUT", groups, {"data": {"id": "0123456789abcdef0123456789abcdef", "name": "Sales"}}, 409),
        ("GET", groups + "/0123456789abcdef0123456789abcdef", None, 200),
        ("GET", groups + "/0123456789abcdef0123456789abcdef", None, 200),
        ("GET", groups, None, 200),
        ("GET", groups, None, 200),
        ("GET", groups + "/ffffffffffffffffffffffffffffffff", None, 404),
        ("GET", "/readyz", None, 200),
        ("GET", "/healthz", None, 200),
    ]
    for method, path, body, expected in wanted:
        status, text = service.request(method, path, body, token)
        if status != expected:
            fail(f"{method} {path} answered {status}, not {expected}: {text[:300]}")


class Prometheus:
    """Debian's Prometheus server scraping `target` every second, with a store of its own."""

    def __init__(self, binary, tmp, target):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: kz-groups\n    metrics_path: /metrics\n"
                    f"    static_configs:\n      - targets: [\"{target}\"]\n")
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, expr):
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def scraped(self, samples):
        """Waits until `samples` scrapes of kz-groups were stored (30 s at most)."""
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                got = self.query('count_over_time(up{job="kz-groups"}[5m])')
                if got["data"]["result"] and float(got["data"]["result"][0]["value"][1]) >= samples:
                    return True
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def evaluate(prometheus, expressions):
    """Every expression evaluated by a Prometheus that scraped the service."""
    with_data = 0
    for where, expr in expressions:
        got = prometheus.query(expr)
        if got.get("status") != "success":
            fail(f"{where}: Prometheus cannot evaluate it: {got.get('error')}: {expr}")
        elif got["data"]["result"]:
            with_data += 1
    print(f"a Prometheus that scraped kz-groups evaluates all {len(expressions)} expressions; "
          f"{with_data} return series (alerts quiet, panels of events that did not happen empty)")


def scrape(service):
    """{metric sample name: set of label names} of one GET /metrics."""
    status, text = service.request("GET", "/metrics")
    if status != 200:
        sys.exit(f"/metrics answered {status}")
    names = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s", line)
        labels = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(3) or ""))
        names.setdefault(m.group(1), set()).update(labels)
    return names


def documented_values():
    """The values of `route` and `kind` the README's "Metrics" section names."""
    text = open(README).read()
    section = text.split("## Metrics", 1)[-1].split("\n## ", 1)[0]
    routes = re.search(r"`route` is the name of a route of the route table\s*\((.*?)\)", section, re.S)
    kinds = re.search(r"`kind` is (.*?) \|", section)
    values = {
        "route": set(re.findall(r"`([a-z_]+)`", routes.group(1))) if routes else set(),
        "kind": set(re.findall(r"`([a-z_]+)`", kinds.group(1))) if kinds else set(),
    }
    for label, found in values.items():
        if not found:
            fail(f"README.md, Metrics: cannot find the documented values of `{label}`")
    return values


def check_names(expressions, exported, values):
    checked = set()
    for where, expr, legend, dashboard in expressions:
        try:
            # Grafana's variables sit in strings and ranges, which the lexer passes over.
            selectors, grouping = analyse(expr)
        except ValueError as e:
            fail(f"{where}: {e}")
            continue
        if not selectors:
            fail(f"{where}: reads no metric: {expr}")
        known = set(TARGET_LABELS)
        for name, matchers in selectors:
            labels = exported.get(name, PROMETHEUS_SERIES.get(name) if not dashboard else None)
            if labels is None:
                fail(f"{where}: {name} is not in a live scrape of kz-groups' /metrics")
                continue
            checked.add(name)
            known |= labels
            for label, op, value in matchers:
                if label not in labels | TARGET_LABELS:
                    fail(f"{where}: {name} has no label {label!r} (it has {sorted(labels)})")
                if label in values and re.fullmatch(r"[a-z_|]+", value):
                    for v in value.split("|"):
                        if v not in values[label]:
                            fail(f"{where}: {label}={v!r} is not a {label} the README documents")
            if dashboard and not where.startswith("variable"):
                given = {(l, op, v) for l, op, v in matchers}
                if not {("job", "=~", "$job"), ("instance", "=~", "$instance")} <= given:
                    fail(f"{where}: {name} must be filtered by job=~\"$job\", instance=~\"$instance\"")
        for label in grouping - known:
            fail(f"{where}: groups by {label!r}, which none of its metrics has")
        for label in set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) - known - grouping:
            fail(f"{where}: the legend names {label!r}, which the query's series do not have")
    return checked


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--promtool", default="promtool")
    parser.add_argument("--prometheus", help="a Prometheus server binary, to evaluate every expression")
    parser.add_argument("--amqp-url", default=os.environ.get(
        "KZ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    args = parser.parse_args()

    dash = json.load(open(DASHBOARD))
    queries = dashboard_queries(dash)
    rules = rule_expressions(open(RULES).read())
    if len(rules) < 9:
        fail(f"{RULES}: found only {len(rules)} expressions")
    expressions = [(w, e, l, True) for w, e, l in queries] + [(w, e, "", False) for w, e in rules]
    parsed = []
    for where, expr, _, dashboard in expressions:
        try:
            parsed.append((where, grafana_expr(expr) if dashboard else expr))
        except ValueError as e:
            fail(f"{where}: {e}")
    promtool_parses(args.promtool, parsed)

    with tempfile.TemporaryDirectory() as tmp:
        service = Service(os.path.abspath(args.binary), tmp, args.amqp_url)
        try:
            traffic(service, tmp)
            exported = scrape(service)
            if args.prometheus:
                prometheus = Prometheus(args.prometheus, tmp, service.base.split("//", 1)[1])
                try:
                    if not prometheus.scraped(2):
                        sys.exit("Prometheus did not scrape kz-groups within 30 s")
                    traffic(service, tmp, 2)
                    if not prometheus.scraped(6):
                        sys.exit("Prometheus did not scrape kz-groups within 30 s")
                    evaluate(prometheus, parsed)
                finally:
                    prometheus.stop()
        finally:
            service.stop()
    checked = check_names(expressions, exported, documented_values())
    print(f"{len(queries)} dashboard queries and {len(rules)} alert expressions read "
          f"{len(checked)} metrics, all in a live scrape of {len(exported)} series names")
    if errors:
        print("operator pack check FAILED:", *("  - " + e for e in errors), sep="\n", file=sys.stderr)
        sys.exit(1)
    print("the dashboard and the alert rules read only what kz-groups exports")


if __name__ == "__main__":
    main()
