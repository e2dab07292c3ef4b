"""The operator's kit against the real thing: Debian's Prometheus scrapes a live proxy under traffic,
loads deploy/prometheus/bluegreen-rules.yml, and answers every query of the Grafana dashboard.

A dashboard query must parse; it must also return data when every metric it reads is in the proxy's
/metrics (the others, e.g. embedder metrics on a proxy without embedders, or failovers when none
happened, only have to parse). So the dashboard stays true as metrics change.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from qdrant_client import models

from tests.support import REPO_ROOT, RunningProxy, ServerProcess, free_port, qdrant_client, wait_until

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
RULES = REPO_ROOT / "deploy" / "prometheus" / "bluegreen-rules.yml"
RULES_TEST = REPO_ROOT / "tests" / "prometheus" / "bluegreen-rules.test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "bluegreen-proxy.json"
TOKEN = "observability-test-token"
DIM = 4
# What Grafana puts for its built-in interval variables; 10 scrapes at the test's 1 s interval.
GRAFANA_BUILTINS = {"__rate_interval": "10s", "__interval": "5s", "__range": "1m"}

needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's `prometheus` binary is not installed (.ci/run installs it)")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="`promtool` (Debian's prometheus package) is not installed (.ci/run installs it)")


@needs_promtool
def test_rule_file_passes_promtool_check():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {rule_count()} rules found" in result.stdout


@needs_promtool
def test_alerts_fire_on_what_they_describe():
    """promtool's unit tests: each alert fires on its trigger and stays quiet on the neighbours."""
    result = subprocess.run([PROMTOOL, "test", "rules", str(RULES_TEST)], capture_output=True, text=True, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == set(alert_names()), "every alert has a promtool test"


@needs_promtool
def test_scrape_config_passes_promtool_check():
    config = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
    result = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_layout_and_variables():
    """What Grafana needs beyond valid PromQL: unique ids, panels that do not overlap on the 24-column
    grid, every query on the datasource variable, and the `route` variable every route query uses."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["route"]["definition"] == "label_values(bluegreen_configured_green_percent, route)"
    assert variables["datasource"]["type"] == "datasource"
    per_route = re.compile(r"\b(bluegreen_(?:requests|request_duration|upstream_errors|green_percent|configured_green_percent"
                           r"|rollbacks|route_state|failovers|shadow)\w*)(\{[^}]*\})?")
    for where, expr in dashboard_queries("some_route"):
        for selector in per_route.finditer(expr):
            assert 'route=~"some_route"' in (selector.group(2) or ""), f"{where}: {selector.group(1)} not filtered by $route"
    annotations = {a["name"] for a in dashboard["annotations"]["list"]}
    assert {"Rollbacks", "Guard state changes"} <= annotations


def rule_count() -> int:
    return sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])


def alert_names() -> list[str]:
    return [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries(route: str) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation, variables substituted as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = dict(GRAFANA_BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "constant":
            values[variable["name"]] = variable["query"]
    values["route"] = route

    def substitute(expr: str) -> str:
        # longest names first: $__rate_interval before $__range, $reads before $route
        for name in sorted(values, key=len, reverse=True):
            expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
        assert "$" not in expr, f"unsubstituted variable in {expr}"
        return expr

    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", substitute(target["expr"])))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries.append((f"annotation {annotation['name']!r}", substitute(annotation["expr"])))
    return queries


class Prometheus:
    def __init__(self, workdir: Path, scrape_target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "bluegreen-proxy", "static_configs": [{"targets": [scrape_target]}]}],
        }))
        self.server = ServerProcess(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            ready_url=self.url + "/-/ready",
            log_path=workdir / "prometheus.log",
        )

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the error in the body
            return json.loads(exc.read())

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)


def admin_post(proxy: RunningProxy, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        proxy.admin_url + path, data=json.dumps(body or {}).encode(), method="POST",
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def metric_names_in(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


@needs_prometheus
def test_dashboard_queries_and_rules_against_a_live_prometheus(tmp_path, embedded_upstream):
    tag = uuid.uuid4().hex[:8]
    route, blue, green = f"obs_{tag}", f"obs_{tag}_blue", f"obs_{tag}_green"
    direct = qdrant_client(embedded_upstream, timeout=30)
    for name in (blue, green):
        direct.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        direct.upsert(name, [models.PointStruct(id=i, vector=[1.0, i, 0.5, 0.1]) for i in range(1, 21)], wait=True)
    direct.close()

    def routes(percent: float) -> str:
        return (f"  {route}:\n    blue: {blue}\n    green: {green}\n    green_percent: {percent}\n"
                f"    guard: {{}}\n    preflight: {{}}\n    shadow: {{sample: 1.0}}\n")

    stop_traffic = threading.Event()
    sent = [0]

    def traffic(url: str) -> None:
        clients = [qdrant_client(url, timeout=10, headers={"x-user-id": f"user-{i}"}) for i in range(12)]
        try:
            while not stop_traffic.is_set():
                for client in clients:
                    client.query_points(route, query=[1.0, 0.2, 0.3, 0.4], limit=3)
                    client.count(route, exact=True)
                    sent[0] += 2
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    with RunningProxy(tmp_path / "proxy", embedded_upstream, routes(50), admin_options=f"token: {TOKEN}") as proxy:
        prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{proxy.admin_port}")
        worker = threading.Thread(target=traffic, args=(proxy.url,), daemon=True)
        with prometheus.server:
            worker.start()
            try:
                wait_until(lambda: proxy.admin_json()["routes"][route]["effective_green_percent"] == 50, timeout=15)

                def shows(expr: str) -> bool:
                    return bool(prometheus.query(expr).get("data", {}).get("result"))

                # A counter shows an increase only between two scrapes: change things once the route's
                # series have been scraped a few times, then again once the new series have been
                # scraped (a counter's first sample has no increase).
                wait_until(lambda: shows(f'count_over_time(bluegreen_requests_total{{route="{route}"}}[1m]) >= 3'), timeout=20, interval=0.3)
                for percent in (40, 30):
                    proxy.write_routes(routes(percent))
                    wait_until(lambda: proxy.admin_json()["routes"][route]["green_percent"] == percent, timeout=10)
                    admin_post(proxy, f"/admin/routes/{route}/rollback", {"reason": "manual"})
                    wait_until(lambda: shows(f'bluegreen_route_state{{route="{route}",state="rolled_back"}} == 1'), timeout=15, interval=0.3)
                    admin_post(proxy, f"/admin/routes/{route}/resume")
                    wait_until(lambda: shows(f'bluegreen_route_state{{route="{route}",state="active"}} == 1'), timeout=15, interval=0.3)
                time.sleep(2)  # a few more scrapes of the traffic after the last change
            finally:
                stop_traffic.set()
                worker.join(timeout=15)
            assert sent[0] > 100

            exposition = proxy.metrics_text()
            present = metric_names_in(exposition)
            failures, checked = [], []
            for where, expr in dashboard_queries(route):
                answer = prometheus.query(expr)
                if answer.get("status") != "success":
                    failures.append(f"{where}: does not parse/evaluate: {answer.get('error')}\n  {expr}")
                    continue
                needed = set(re.findall(r"\bbluegreen_[a-z_]+", expr))
                if needed <= present:
                    checked.append((where, expr))
                    if not answer["data"]["result"]:
                        failures.append(f"{where}: no data although {sorted(needed)} are exported\n  {expr}")
            assert not failures, "\n".join(failures)
            assert len(checked) >= 20, "most of the dashboard reads metrics this run produced"
            assert any("shadow_overlap" in expr for _, expr in checked), "the shadowed route fed the shadow panels"

            # The rules file is loaded, and every rule evaluates without error against real series.
            def rules_evaluated():
                groups = prometheus.api("rules")["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                evaluated = all(rule.get("lastEvaluation", "").startswith("20") and rule["health"] != "unknown" for rule in rules)
                return groups if evaluated and rules else None

            groups = wait_until(rules_evaluated, timeout=15, interval=0.3)
            assert {group["file"] for group in groups} == {str(RULES)}
            rules = [rule for group in groups for rule in group["rules"]]
            assert sorted(rule["name"] for rule in rules) == sorted(alert_names())
            assert [(rule["name"], rule["health"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
            # Manual rollbacks are not the guard's, and the proxy is up: nothing fires.
            firing = [rule["name"] for rule in rules if rule["state"] == "firing"]
            assert firing == []
            # The data the rules read is there: the route's manual rollbacks were counted.
            rollbacks = prometheus.query(f'sum(bluegreen_rollbacks_total{{route="{route}",reason="manual"}})')["data"]["result"]
            assert float(rollbacks[0]["value"][1]) == 2


# ------------------------------------------------------------------ event counters from zero

ROLLBACK_REASONS = ("error_rate", "latency", "empty_results", "overlap", "manual")
UPSTREAM_ERROR_KINDS = ("timeout", "connect", "5xx", "too_large", "overloaded")
EMBED_ERROR_KINDS = ("timeout", "connect", "status", "response", "dimensions", "model", "closed")


SERIES_LABELS = {
    "bluegreen_rollbacks_total": ("route", "reason"),
    "bluegreen_failovers_total": ("route",),
    "bluegreen_upstream_errors_total": ("route", "color", "collection", "kind"),
    "bluegreen_config_reloads_total": ("result",),
    "bluegreen_embed_errors_total": ("embedder", "kind"),
}


def samples(exposition: str, name: str) -> dict[tuple[str, ...], float]:
    """The samples of one metric: its label values (SERIES_LABELS order) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        tuple(sample.labels[label] for label in SERIES_LABELS[name]): sample.value
        for family in text_string_to_metric_families(exposition) for sample in family.samples if sample.name == name
    }


def test_event_counters_are_exported_at_zero_for_every_known_route(tmp_path):
    """A counter that first appears at 1 has no increase() in Prometheus: the alert and the dashboard
    miss the first event. Every known route x reason (and the other event counters) starts at 0, and
    a route added by a reload gets its series at once; unknown names get none (bounded labels)."""
    from tests.raw_upstream import RawUpstream, keep_alive_json
    from tests.support import route_yaml

    embedders = "embedders: {svc: {type: openai, model: m, url: 'http://127.0.0.1:9/v1', dimensions: 4}}\n"
    docs = route_yaml("docs", "docs_v1", "docs_v2", 10)
    with RawUpstream(keep_alive_json) as upstream, RunningProxy(tmp_path / "proxy", upstream.url, docs, extra_yaml=embedders) as proxy:
        exposition = proxy.metrics_text()
        assert samples(exposition, "bluegreen_rollbacks_total") == {("docs", reason): 0 for reason in ROLLBACK_REASONS}
        assert samples(exposition, "bluegreen_failovers_total") == {("docs",): 0}
        expected_errors = {
            (route, colour, collection, kind): 0
            for route, colour, collection in (("docs", "blue", "docs_v1"), ("docs", "green", "docs_v2"), ("_unrouted", "none", "_unrouted"))
            for kind in UPSTREAM_ERROR_KINDS
        }
        assert samples(exposition, "bluegreen_upstream_errors_total") == expected_errors
        assert samples(exposition, "bluegreen_config_reloads_total") == {("success",): 0, ("failure",): 0}
        assert samples(exposition, "bluegreen_embed_errors_total") == {("svc", kind): 0 for kind in EMBED_ERROR_KINDS}

        # Traffic to an unknown collection adds no series of its own.
        with urllib.request.urlopen(proxy.url + "/collections/invented_name/points/count", data=b"{}", timeout=5):
            pass
        proxy.write_routes(docs + route_yaml("faq", "faq_v1", "faq_v2", 0))
        wait_until(lambda: ("faq", "manual") in samples(proxy.metrics_text(), "bluegreen_rollbacks_total"), timeout=10)
        exposition = proxy.metrics_text()
        rollbacks = samples(exposition, "bluegreen_rollbacks_total")
        assert rollbacks == {(route, reason): 0 for route in ("docs", "faq") for reason in ROLLBACK_REASONS}
        assert samples(exposition, "bluegreen_failovers_total") == {("docs",): 0, ("faq",): 0}
        errors = samples(exposition, "bluegreen_upstream_errors_total")
        assert {key for key in errors if key[0] == "faq"} == {
            ("faq", colour, collection, kind) for colour, collection in (("blue", "faq_v1"), ("green", "faq_v2")) for kind in UPSTREAM_ERROR_KINDS
        }
        assert not any("invented_name" in key for key in errors)
        assert samples(exposition, "bluegreen_config_reloads_total") == {("success",): 1, ("failure",): 0}


@needs_prometheus
def test_first_automatic_rollback_fires_the_alert_on_a_live_prometheus(tmp_path, proxies, faulty_upstream):
    """What the promtool tests cannot see: the series a real proxy exports. Prometheus scrapes a proxy
    whose route has never rolled back; green starts failing, the guard rolls the route back once, and
    BluegreenAutomaticRollback fires for it."""
    from tests.faults import clear_faults, set_fault
    from tests.support import route_yaml
    from tests.test_proxy import make_collections
    from tests.test_safety import FAST_GUARD, drive_until

    fault_url, upstream_url = faulty_upstream
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"alert_{tag}", f"alert_{tag}_blue", f"alert_{tag}_green"
    make_collections(upstream_url, blue, green)
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=FAST_GUARD % ""))
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{proxy.admin_port}")
    try:
        with prometheus.server:
            def scraped(expr: str) -> bool:
                return bool(prometheus.query(expr).get("data", {}).get("result"))

            wait_until(lambda: scraped('count_over_time(up{job="bluegreen-proxy"}[1m]) >= 3'), timeout=20, interval=0.3)
            set_fault(fault_url, green, status=503)
            drive_until(proxy, logical, lambda route: route["state"] == "rolled_back")

            def firing() -> list[dict]:
                alerts = prometheus.api("alerts")["data"]["alerts"]
                return [a for a in alerts if a["labels"]["alertname"] == "BluegreenAutomaticRollback" and a["state"] == "firing"]

            alerts = wait_until(firing, timeout=20, interval=0.3)
            assert [(a["labels"]["route"], a["labels"]["reason"]) for a in alerts] == [(logical, "error_rate")]
    finally:
        clear_faults(fault_url)
