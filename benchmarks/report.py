"""From a run's raw results to the ratios that matter, the targets' verdicts, and a Markdown report.

Targets are reported, never asserted: a quick run is too short for its figures to mean anything.
"""
from __future__ import annotations

# What "flat" means for the routes-scaling targets.
CPU_FLAT_RATIO = 1.25  # per-request CPU at the most routes vs one route
MEMORY_FLAT_RATIO = 1.10  # peak RSS at the most routes vs one route


def reload_counts(metrics_text: str) -> dict[str, float]:
    """bluegreen_config_reloads_total by result, from the proxy's /metrics."""
    counts = {"success": 0.0, "failure": 0.0}
    for line in metrics_text.splitlines():
        if line.startswith("bluegreen_config_reloads_total{"):
            for result in counts:
                if f'result="{result}"' in line:
                    counts[result] += float(line.rsplit(" ", 1)[1])
    return counts


def _index(rows: list[dict], *keys: str) -> dict[tuple, dict]:
    return {tuple(row[k] for k in keys): row for row in rows}


def _added(row: dict, baseline: dict, quantile: str) -> float:
    return round(row["latency_ms"][quantile] - baseline["latency_ms"][quantile], 3)


def saturated(row: dict) -> bool:
    """An open-loop run whose server could not keep the rate: its latency is a queue, not a cost."""
    return row["requests"] < 0.95 * row["scheduled"] or row["failed"]["timeout"] > 0


def scaling_by_routes(rows: list[dict]) -> list[dict]:
    """Routes-scaling runs (one per pass) folded per route count: means, peak of peaks, failures summed."""
    folded = []
    for count in dict.fromkeys(row["routes"] for row in sorted(rows, key=lambda r: r["routes"])):
        runs = [row for row in rows if row["routes"] == count]

        def mean(values) -> float:
            values = [v for v in values if v is not None]
            return round(sum(values) / len(values), 1) if values else None

        folded.append({
            "routes": count,
            "runs": len(runs),
            "throughput_rps": mean(r["throughput_rps"] for r in runs),
            "p99_ms": mean(r["latency_ms"]["p99"] for r in runs),
            "cpu_us_per_request": mean(r["resources"]["cpu_us_per_request"] for r in runs),
            "peak_rss_mb": max(r["resources"]["peak_rss_mb"] for r in runs),
            "rss_growth_kb_per_10k_requests": mean(r["resources"]["rss_growth_kb_per_10k_requests"] for r in runs),
            "failed": sum(r["failed_total"] for r in runs),
            "others_cpu_share": mean(r["others_cpu_share"] for r in runs),
        })
    return folded


def summarize(results: dict) -> dict:
    closed = _index(results["closed_loop"], "upstream", "connections", "target")
    opened = _index(results["open_loop"], "upstream", "rate_rps", "target")

    closed_ratios = []
    for (upstream, connections, target), direct in closed.items():
        if target != "direct":
            continue
        proxy, split = closed[(upstream, connections, "proxy")], closed[(upstream, connections, "nginx")]
        closed_ratios.append({
            "upstream": upstream,
            "connections": connections,
            "proxy_over_nginx_throughput": round(proxy["throughput_rps"] / split["throughput_rps"], 3),
            "proxy_added_p50_ms": _added(proxy, direct, "p50"),
            "nginx_added_p50_ms": _added(split, direct, "p50"),
            "proxy_added_p99_ms": _added(proxy, direct, "p99"),
            "nginx_added_p99_ms": _added(split, direct, "p99"),
        })

    open_added = []
    for (upstream, rate, target), direct in opened.items():
        if target != "direct":
            continue
        proxy, split = opened[(upstream, rate, "proxy")], opened[(upstream, rate, "nginx")]
        row = {"upstream": upstream, "rate_rps": rate, "saturated": [r["target"] for r in (direct, proxy, split) if saturated(r)]}
        for name, measured in (("proxy", proxy), ("nginx", split)):
            for quantile in ("p50", "p99"):
                comparable = not saturated(direct) and not saturated(measured)
                row[f"{name}_added_{quantile}_ms"] = _added(measured, direct, quantile) if comparable else None
        open_added.append(row)

    churn = results["reload_churn"]
    churn_failed = churn["churn"]["failed_total"]
    churn_p99_ratio = round(churn["churn"]["latency_ms"]["p99"] / churn["baseline"]["latency_ms"]["p99"], 2)

    scaling = scaling_by_routes(results["route_scaling"])
    fewest, most = scaling[0], scaling[-1]
    cpu_ratio = round(most["cpu_us_per_request"] / fewest["cpu_us_per_request"], 2)
    rss_ratio = round(most["peak_rss_mb"] / fewest["peak_rss_mb"], 2)

    ratios = _index(closed_ratios, "upstream", "connections")
    added = _index(open_added, "upstream", "rate_rps")
    targets = []
    if ("fixed", 16) in ratios:
        value = ratios[("fixed", 16)]["proxy_over_nginx_throughput"]
        targets.append(_target("fixed upstream, 16 connections: proxy throughput / nginx throughput", value, ">= 0.25", value >= 0.25))
    if ("fixed", 1) in ratios:
        value = ratios[("fixed", 1)]["proxy_added_p50_ms"]
        targets.append(_target("fixed upstream, 1 connection: proxy added p50 (ms)", value, "<= 0.3", value <= 0.3))
    for upstream in ("fixed", "embedded"):
        if (upstream, 2000) not in added:
            continue
        name = f"{upstream} upstream, open loop 2,000 req/s: proxy added p99 (ms)"
        direct = opened[(upstream, 2000, "direct")]
        if saturated(direct):
            note = f"not measurable: the upstream alone served {direct['throughput_rps']:,.0f} req/s"
            targets.append(_target(name, note, "<= 2", None))
        else:
            value = added[(upstream, 2000)]["proxy_added_p99_ms"]
            targets.append(_target(name, "proxy saturated" if value is None else value, "<= 2", value is not None and value <= 2))
    targets.append(_target("reload churn: failed requests", churn_failed, "0", churn_failed == 0))
    targets.append(_target("reload churn: p99 churn / p99 no churn", churn_p99_ratio, "<= 1.5", churn_p99_ratio <= 1.5))
    targets.append(_target(
        f"routes {fewest['routes']} -> {most['routes']}: CPU per request ratio", cpu_ratio,
        f"<= {CPU_FLAT_RATIO}", cpu_ratio <= CPU_FLAT_RATIO,
    ))
    targets.append(_target(
        f"routes {fewest['routes']} -> {most['routes']}: peak RSS ratio", rss_ratio,
        f"<= {MEMORY_FLAT_RATIO}", rss_ratio <= MEMORY_FLAT_RATIO,
    ))
    return {
        "closed_loop_ratios": closed_ratios,
        "open_loop_added": open_added,
        "reload_churn": {"failed": churn_failed, "p99_ratio": churn_p99_ratio},
        "route_scaling": {"by_routes": scaling, "cpu_per_request_ratio": cpu_ratio, "peak_rss_ratio": rss_ratio},
        "targets": targets,
    }


def _target(name: str, measured, goal: str, met: bool | None) -> dict:
    """met None: the run could not measure it (see `measured`)."""
    return {"name": name, "measured": measured, "goal": goal, "met": met if met is None else bool(met)}


# ---------------------------------------------------------------- Markdown


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _resources(row: dict) -> list:
    resources = row.get("resources")
    if not resources:
        return [None, None]
    return [resources["cpu_seconds_per_10k_requests"], resources["peak_rss_mb"]]


def _latencies(row: dict) -> list:
    latency = row["latency_ms"]
    return [latency["p50"], latency["p90"], latency["p99"], latency["p99.9"]]


def _share(value: float | None) -> str | None:
    return None if value is None else f"{value:.0%}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "**no**")


def markdown(results: dict) -> str:
    m = results["machine"]
    summary = results["summary"]
    plan = results["plan"]
    out = [
        f"# bluegreen-proxy benchmark ({results['mode']} run)",
        "",
        f"{results['date']} · {m['nproc']} CPUs ({m['cpu']}) · Linux {m['kernel']} · Python {m['python']} · "
        f"{m['nginx']} · {m['wrk']} · {results['elapsed_seconds']:g} s",
        "",
        f"Other processes used {results['background_load']['other_processes_share']:.0%} of the machine's CPU during the run "
        f"(hypervisor steal {results['background_load']['steal_share']:.0%}); the `others` column gives it per measurement: "
        "figures taken while others were busy are noisier.",
        "",
        "Everything on one machine over loopback: load generator, servers and upstream share the same cores. "
        "The proxy is one process (uvicorn + uvloop); nginx runs 1 worker; wrk runs 1 thread. "
        "Latencies in ms; CPU in CPU-seconds per 10,000 requests (server process tree); "
        "peak RSS = VmHWM during the run.",
    ]
    if results["mode"] == "quick":
        out += ["", "**Quick run: every scenario ran, but for about a second each; the figures mean nothing.**"]

    out += ["", "## Targets (reported, not asserted)", ""]
    out.append(_table(
        ["target", "measured", "goal", "met"],
        [[t["name"], t["measured"], t["goal"], _verdict(t["met"])] for t in summary["targets"]],
    ))

    out += ["", f"## Closed loop (wrk, {plan['closed_loop_seconds']} s per run)", ""]
    out.append(_table(
        ["upstream", "conns", "target", "req/s", "p50", "p90", "p99", "p99.9", "failed", "CPU s/10k", "peak RSS MB", "others"],
        [[r["upstream"], r["connections"], r["target"], r["throughput_rps"], *_latencies(r), r["failed_total"],
          *_resources(r), _share(r["others_cpu_share"])] for r in results["closed_loop"]],
    ))
    out += ["", "Proxy vs nginx, added = target minus direct at the same level:", ""]
    out.append(_table(
        ["upstream", "conns", "proxy/nginx req/s", "proxy +p50", "nginx +p50", "proxy +p99", "nginx +p99"],
        [[r["upstream"], r["connections"], r["proxy_over_nginx_throughput"], r["proxy_added_p50_ms"],
          r["nginx_added_p50_ms"], r["proxy_added_p99_ms"], r["nginx_added_p99_ms"]] for r in summary["closed_loop_ratios"]],
    ))

    out += ["", f"## Open loop (fixed request rate, latency from the scheduled send; {plan['open_loop_seconds']:g} s per run, "
                f"{plan['open_loop_connections']} connections)", ""]
    out.append(_table(
        ["upstream", "rate", "target", "achieved req/s", "p50", "p90", "p99", "p99.9", "failed", "generator lag p99",
         "CPU s/10k", "others"],
        [[r["upstream"], r["rate_rps"], r["target"], r["throughput_rps"], *_latencies(r),
          f"{r['failed_total']:,} (saturated)" if saturated(r) else r["failed_total"],
          r["generator_lag_ms"]["p99"], _resources(r)[0], _share(r["others_cpu_share"])] for r in results["open_loop"]],
    ))
    out += ["", "Added = target minus direct; `-` where a run was saturated (it could not keep the rate: its latency "
                "is a queue, not a cost):", ""]
    out.append(_table(
        ["upstream", "rate", "proxy +p50", "nginx +p50", "proxy +p99", "nginx +p99", "saturated"],
        [[r["upstream"], r["rate_rps"], r["proxy_added_p50_ms"], r["nginx_added_p50_ms"], r["proxy_added_p99_ms"],
          r["nginx_added_p99_ms"], ", ".join(r["saturated"]) or None] for r in summary["open_loop_added"]],
    ))

    churn = results["reload_churn"]
    writes, reloads = churn["config_writes"], churn["reloads"]
    out += ["", f"## Reload churn (fixed upstream, open loop {churn['rate_rps']} req/s, config rewritten every "
                f"{churn['interval_ms']:g} ms for {plan['churn_seconds']:g} s)", ""]
    out.append(_table(
        ["run", "requests", "failed", "p50", "p90", "p99", "p99.9", "max", "CPU s/10k", "others"],
        [[name, r["requests"], r["failed_total"], *_latencies(r), r["latency_ms"]["max"], _resources(r)[0],
          _share(r["others_cpu_share"])] for name, r in (("no churn", churn["baseline"]), ("churn", churn["churn"]))],
    ))
    out += ["", f"Config writes: {writes['total']} ({writes['atomic']} by rename, {writes['in_place']} in place); "
                f"reloads applied {reloads['success']:g}, rejected {reloads['failure']:g}; "
                f"p99 churn / no churn = {summary['reload_churn']['p99_ratio']:g}."]
    if churn["churn"]["failed_total"] and churn["proxy_remarks"]:
        out += ["", "What the proxy logged besides routine reloads:", "", "```", *churn["proxy_remarks"][:12], "```"]

    passes = plan["scaling_passes"]
    out += ["", f"## Routes scaling (fixed upstream, wrk {plan['scaling_connections']} connections, load spread evenly "
                f"over every route; {plan['scaling_seconds']} s per run, "
                + (f"{passes} passes up and down, means shown)" if passes > 1 else "1 pass)"), ""]
    out.append(_table(
        ["routes", "req/s", "p99", "CPU µs/request", "peak RSS MB", "RSS growth KB/10k req", "failed", "others"],
        [[r["routes"], r["throughput_rps"], r["p99_ms"], r["cpu_us_per_request"], r["peak_rss_mb"],
          r["rss_growth_kb_per_10k_requests"], r["failed"], _share(r["others_cpu_share"])]
         for r in summary["route_scaling"]["by_routes"]],
    ))
    return "\n".join(out) + "\n"
