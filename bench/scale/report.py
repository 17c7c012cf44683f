"""The numbers of one scale run, from what its processes wrote, and the table of several runs."""

from __future__ import annotations

import json
import os
from collections import Counter

from bench.measure import percentile
from bench.report import markdown
from bench.scale import fault_report
from bench.scale.common import percentiles

# (key, label, format) of each row, in table order; a key missing from a column prints "-".
ROWS = [
    ("hosts", "hosts (processes x hosts)", "{}"),
    ("up_s", "time until every host registered and answers (s)", "{:.1f}"),
    ("fanouts", "fanout casts sent", "{}"),
    ("fanout_delivered", "fanout copies delivered / expected", "{}"),
    ("fanout_duplicates", "fanout copies run twice", "{}"),
    ("fanout_complete", "fanouts that reached every host", "{}"),
    ("fanout_last_p50", "time until the last host has a fanout, p50 (s) †", "{:.2f}"),
    ("fanout_last_p99", "  p99 (s)", "{:.2f}"),
    ("fanout_last_max", "  max (s)", "{:.2f}"),
    ("fanout_median_p50", "time until half the hosts have a fanout, p50 (s)", "{:.2f}"),
    ("fanout_median_max", "  max (s)", "{:.2f}"),
    ("fanout_return_max", "fanout cast() blocked the API, max (s)", "{:.2f}"),
    ("calls", "directed calls made / failed", "{}"),
    ("call_p50", "directed call p50 (ms)", "{:.1f}"),
    ("call_p99", "directed call p99 (ms)", "{:.1f}"),
    ("casts", "directed casts sent / run / lost / run twice", "{}"),
    ("conductor", "conductor calls made / failed", "{}"),
    ("conductor_p50", "conductor call p50 (ms)", "{:.1f}"),
    ("conductor_p99", "conductor call p99 (ms)", "{:.1f}"),
    ("notifications", "notifications sent / received / duplicates", "{}"),
    ("redis_ops", "Redis commands/s", "{:.0f}"),
    ("redis_ops_per_host", "  per host", "{:.2f}"),
    ("redis_cpu", "Redis CPU (% of a core)", "{:.1f}"),
    ("broker_fds", "Redis / RabbitMQ process: file descriptors", "{}"),
    ("broker_rss", "  RSS (MiB)", "{:.0f}"),
    ("broker_cpu", "  CPU (% of a core)", "{:.1f}"),
    ("ctl_tcp", "controller: TCP connections (each)", "{:.0f}"),
    ("ctl_fds", "controller: file descriptors", "{:.0f}"),
    ("ctl_rss", "controller: RSS (MiB)", "{:.0f}"),
    ("ctl_cpu", "controller: CPU (% of a core)", "{:.1f}"),
    ("api_tcp", "API: TCP connections", "{}"),
    ("api_fds", "API: file descriptors", "{}"),
    ("api_rss", "API: RSS (MiB)", "{:.0f}"),
    ("api_cpu", "API: CPU (% of a core)", "{:.1f}"),
    ("host_rss", "per host, loaded: RSS (MiB)", "{:.2f}"),
    ("host_threads", "per host: threads", "{:.1f}"),
    ("host_fds", "per host: file descriptors", "{:.1f}"),
    ("hosts_cpu", "all host processes: CPU (cores)", "{:.2f}"),
    ("pause_fences", "log: 'did not run for' (pause fences)", "{}"),
    ("log_warnings", "log: WARNING/ERROR lines", "{}"),
    ("load", "load average at the end", "{:.1f}"),
    *fault_report.ROWS,
]


def summarize(
    *,
    hosts: int,
    processes: int,
    up: dict,
    api: dict,
    host_results: list[dict],
    controllers: list[dict],
    redis: dict | None,
    broker: tuple[dict, dict] | None,
    duration: float,
    logs: Counter,
    load: float,
) -> dict:
    """Every row's value (a flat dict) from what the processes of one run wrote."""
    sizes = sorted({r["hosts"] for r in host_results if r.get("hosts")}, reverse=True)
    layout = f"{processes} x {sizes[0]}" if len(sizes) == 1 else f"{processes} processes"
    v: dict = {"hosts": f"{hosts} ({layout})", "load": load}
    v["up_s"] = up.get("all")
    v["up_answered"] = up.get("answered")
    v.update(_fanout(api, host_results, hosts))
    v.update(_casts(api, host_results))
    calls = [s * 1000 for s in api["calls"]]
    v["calls"] = f"{len(calls) + len(api['call_failures'])} / {len(api['call_failures'])}"
    v["calls_failed"] = len(api["call_failures"])
    v["call_p50"], v["call_p99"] = _p(calls)
    conductor = [s * 1000 for r in host_results for s in r.get("conductor", [])]
    failed = sum(len(r.get("conductor_failures", [])) for r in host_results)
    v["conductor"] = f"{len(conductor) + failed} / {failed}"
    v["conductor_failed"] = failed
    v["conductor_p50"], v["conductor_p99"] = _p(conductor)
    sent = sum(r.get("notifications_sent", 0) for r in host_results)
    seen: Counter = Counter()
    for ctl in controllers:
        seen.update(ctl.get("notifications", {}))
    v["notifications"] = f"{sent} / {len(seen)} / {sum(n - 1 for n in seen.values())}"
    v["notifications_sent"], v["notifications_received"] = sent, len(seen)
    if redis:
        v["redis_ops"] = redis["commands"] / redis["seconds"]
        v["redis_ops_per_host"] = v["redis_ops"] / hosts
        v["redis_cpu"] = 100 * redis["cpu"] / redis["seconds"]
        v["redis_by_command"] = redis["by_command"]
    if broker:
        v["broker_fds"], v["broker_rss"] = broker[1]["fds"], broker[1]["rss_mib"]
        v["broker_cpu"] = 100 * (broker[1]["cpu"] - broker[0]["cpu"]) / duration
    for key, field in (("tcp", "tcp"), ("fds", "fds"), ("rss", "rss_mib")):
        v[f"ctl_{key}"] = sum(c["loaded"][field] for c in controllers) / len(controllers)
    v["ctl_cpu"] = sum(_cpu(c, duration) for c in controllers) / len(controllers)
    v["api_tcp"], v["api_fds"] = api["loaded"]["tcp"], api["loaded"]["fds"]
    v["api_rss"] = api["loaded"]["rss_mib"]
    v["api_cpu"] = 100 * (api["loaded"]["cpu"] - api["before"]["cpu"]) / duration
    per = [r for r in host_results if r.get("hosts")]
    for key, field in (("rss", "rss_mib"), ("threads", "threads"), ("fds", "fds")):
        v[f"host_{key}"] = sum((r["loaded"][field] - r["baseline"][field]) for r in per) / sum(
            r["hosts"] for r in per
        )
    v["hosts_cpu"] = sum(_cpu(r, duration) for r in host_results) / 100
    v["pause_fences"] = logs["did not run for"]
    v["log_warnings"] = logs["WARNING"] + logs["ERROR"]
    return v


def _p(samples: list[float]) -> tuple[float | None, float | None]:
    found = percentiles(samples)
    return found["p50"], found["p99"]


def _cpu(result: dict, duration: float) -> float:
    """% of a core a process used during the traffic window."""
    if "start" not in result or "loaded" not in result:
        return 0.0
    return 100 * (result["loaded"]["cpu"] - result["start"]["cpu"]) / duration


def _fanout(api: dict, host_results: list[dict], hosts: int) -> dict:
    copies, distinct, delays = Counter(), Counter(), {}
    for result in host_results:
        for seq, entry in result.get("fanout", {}).items():
            copies[seq] += entry["copies"]
            distinct[seq] += entry["hosts"]
            delays.setdefault(seq, []).extend(entry["delays"])
    last = {seq: max(found) for seq, found in delays.items()}
    median = percentiles([percentile(delays[seq], 50) for seq in delays])
    sent = [str(f["seq"]) for f in api["fanouts"]]
    delivered = sum(distinct[seq] for seq in sent)
    complete = [last[seq] for seq in sent if distinct[seq] == hosts]
    found = percentiles(complete)
    returned = percentiles([f["returned"] for f in api["fanouts"]])
    return {
        "fanouts": len(sent),
        "fanout_delivered": f"{delivered} / {len(sent) * hosts}",
        "fanout_missing": len(sent) * hosts - delivered,
        "fanout_duplicates": sum(copies[seq] - distinct[seq] for seq in sent),
        "fanout_incomplete": len(sent) - len(complete),
        "fanout_complete": f"{len(complete)} / {len(sent)}",
        "fanout_last_p50": found["p50"],
        "fanout_last_p99": found["p99"],
        "fanout_last_max": found["max"],
        "fanout_return_max": returned["max"],
        "fanout_median_p50": median["p50"],
        "fanout_median_max": median["max"],
    }


def _casts(api: dict, host_results: list[dict]) -> dict:
    runs: Counter = Counter()
    for result in host_results:
        runs.update(result.get("casts", {}))
    sent = api["casts"]
    lost = sum(1 for cast_id in sent if runs[cast_id] == 0)
    twice = sum(1 for cast_id in sent if runs[cast_id] > 1)
    return {
        "casts": f"{len(sent)} / {sum(1 for c in sent if runs[c])} / {lost} / {twice}",
        "casts_sent": len(sent),
        "casts_lost": lost,
        "casts_twice": twice,
        "casts_failed": len(api["cast_failures"]),
    }


NOTE = "† over the fanouts that reached every host; the others count in the row above"


def table(columns: list[dict]) -> str:
    """One Markdown table: a row per metric, a column per run (its ``url`` and ``values``)."""
    header = ["", *(column.get("label", column["url"]) for column in columns)]
    rows = []
    for key, label, fmt in ROWS:
        cells = []
        for column in columns:
            value = column["values"].get(key)
            cells.append("-" if value is None else fmt.format(value))
        if any(cell != "-" for cell in cells):
            rows.append([label, *cells])
    return markdown(header, rows) + "\n" + NOTE


def load_columns(paths: list[str]) -> list[dict]:
    columns: list[dict] = []
    for path in paths:
        with open(path) as handle:
            saved = json.load(handle)
        label = os.path.splitext(os.path.basename(path))[0]
        several = len(saved["runs"]) > 1  # a file of side-by-side runs: name each transport
        columns += [
            {**run, "label": f"{label} {run['url'][:-3]}" if several else label}
            for run in saved["runs"]
        ]
    return columns
