"""Text, JSON and HTML views of a status Snapshot: pure functions, no I/O."""

from __future__ import annotations

import html
import time

from zmqdriver import addressing
from zmqdriver.notify.store import NO_LISTENER_YET, GroupBacklog
from zmqdriver.rpc.ping import PingResult
from zmqdriver.status import model
from zmqdriver.status.model import Server, Snapshot


def duration(seconds: float | None) -> str:
    """A short human duration.

    >>> duration(0.4), duration(75), duration(7300), duration(200000), duration(None)
    ('0s', '1m15s', '2h01m', '2d07h', '-')
    """
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def timestamp(unix: float) -> str:
    """A Unix time in UTC, to the second.

    >>> timestamp(1700000000.7)
    '2023-11-14 22:13:20Z'
    """
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows in left-aligned columns.

    >>> print("\\n".join(table(["a", "bb"], [["xxx", "y"]])))
      a    bb
      xxx  y
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        indent
        + "  ".join(
            str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in [headers, *rows]
    ]


def pool_name(group: str) -> str:
    if group == NO_LISTENER_YET:
        return group
    return addressing.pool_of_group(group) or "(no pool)"


def stream_name(prefix: str, stream: str) -> str:
    parsed = addressing.parse_notification_stream(prefix, stream)
    return f"{parsed[0]}/{parsed[1]}" if parsed else stream


# -- JSON ------------------------------------------------------------------------------------


def server_json(server: Server, now: float, ping: PingResult | None) -> dict:
    info = server.info
    data = {
        "server": server.name,
        "address": server.endpoint.uri,
        "hostname": info.hostname if info else None,
        "pid": info.pid if info else None,
        "started": info.started if info else None,
        "age": round(now - info.started, 3) if info else None,
        "version": info.version if info else None,
        "key_fingerprint": addressing.key_fingerprint(server.endpoint.key) or None,
        "expires_in": None if server.expires_in is None else round(server.expires_in, 3),
    }
    if ping is not None:
        body = ping.body or {}
        data.update(
            alive=ping.alive,
            rtt_ms=None if ping.rtt is None else round(ping.rtt * 1000, 3),
            backlog=body.get("backlog"),
            accepting=body.get("accepting"),
            error=ping.error or None,
        )
    return data


def targets_json(snapshot: Snapshot) -> dict:
    pings = snapshot.pings
    return {
        "taken_at": snapshot.taken_at,
        "targets": [
            {
                "exchange": target.exchange,
                "topic": target.topic,
                "servers": [
                    server_json(
                        s, snapshot.taken_at, None if pings is None else pings.get(s.endpoint)
                    )
                    for s in target.servers
                ],
            }
            for target in snapshot.targets
        ],
        "problems": snapshot.problems,
    }


def backlogs_json(snapshot: Snapshot) -> dict:
    return {
        "taken_at": snapshot.taken_at,
        "streams": [
            {
                "stream": stream_name(snapshot.prefix, b.stream),
                "pool": pool_name(b.group),
                "backlog": b.backlog,
                "oldest_unread_age": None
                if b.oldest_unread_age is None
                else round(b.oldest_unread_age, 3),
                "dropped": b.dropped,
            }
            for b in snapshot.backlogs or []
        ],
        "problems": snapshot.problems,
    }


# -- text ------------------------------------------------------------------------------------


def targets_text(snapshot: Snapshot) -> str:
    if not snapshot.targets:
        return "No server is registered.\n"
    lines = []
    for target in snapshot.targets:
        count = len(target.servers)
        lines.append(f"{target.label}  ({count} server{'s' if count != 1 else ''})")
        rows = [_server_row(s, snapshot.taken_at) for s in target.servers]
        lines += table(
            ["server", "address", "hostname", "pid", "started", "version", "key", "expires in"],
            rows,
        )
    return "\n".join(lines) + "\n"


def _server_row(server: Server, now: float) -> list[str]:
    info = server.info
    started = f"{timestamp(info.started)} ({duration(now - info.started)} ago)" if info else "-"
    return [
        server.name or "-",
        server.endpoint.uri,
        info.hostname if info else "-",
        str(info.pid) if info else "-",
        started,
        info.version if info else "(older)",
        addressing.key_fingerprint(server.endpoint.key) or "-",
        "never" if server.expires_in is None else duration(server.expires_in),
    ]


def ping_text(snapshot: Snapshot) -> str:
    if not snapshot.targets:
        return "No server is registered.\n"
    pings = snapshot.pings or {}
    lines = []
    for target in snapshot.targets:
        lines.append(target.label)
        rows = []
        for server in target.servers:
            result = pings.get(server.endpoint)
            rows.append(_ping_row(server, result))
        lines += table(["server", "address", "state", "rtt", "backlog"], rows)
    return "\n".join(lines) + "\n"


def _ping_row(server: Server, result: PingResult | None) -> list[str]:
    name, address = server.name or "-", server.endpoint.uri
    if result is None or not result.alive:
        why = result.error if result is not None else "not pinged"
        return [name, address, f"NOT ANSWERING ({why})", "-", "-"]
    body = result.body or {}
    state = "alive" if body.get("accepting", True) else "alive, not accepting (stopping?)"
    return [name, address, state, f"{result.rtt * 1000:.2f} ms", str(body.get("backlog", "-"))]


def backlog_cells(snapshot: Snapshot, backlog: GroupBacklog) -> list[str]:
    """One pool's row, as the text table and the page show it."""
    return [
        stream_name(snapshot.prefix, backlog.stream),
        pool_name(backlog.group),
        str(backlog.backlog),
        duration(backlog.oldest_unread_age),
        str(backlog.dropped),
    ]


def backlogs_text(snapshot: Snapshot) -> str:
    if not snapshot.backlogs:
        return "No notification stream.\n"
    rows = [backlog_cells(snapshot, b) for b in snapshot.backlogs]
    return (
        "\n".join(table(["stream", "pool", "backlog", "oldest unread", "dropped"], rows, "")) + "\n"
    )


# -- HTML ------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; }
.alive { color: #176f2c; font-weight: bold; } .dead { color: #b00020; font-weight: bold; }
.muted { color: #777; } code { font-size: 0.95em; }
"""


def page(snapshot: Snapshot) -> str:
    """The status page: plain HTML and CSS, no script, nothing fetched from elsewhere."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>zmqdriver status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>zmqdriver status</h1>",
        f"<p class='muted'>Taken {e(timestamp(snapshot.taken_at))}; reload to refresh.</p>",
    ]
    parts += [f"<p class='dead'>{e(problem)}</p>" for problem in snapshot.problems]
    parts.append(f"<h2>RPC targets ({len(snapshot.targets)})</h2>")
    if not snapshot.targets:
        parts.append("<p>No server is registered.</p>")
    pings = snapshot.pings or {}
    dead = model.dead_targets(snapshot.targets, snapshot.pings)
    for target in snapshot.targets:
        verdict = " <span class='dead'>no live server</span>" if target in dead else ""
        parts.append(f"<h3><code>{e(target.label)}</code>{verdict}</h3><table>")
        parts.append(
            "<tr><th>server</th><th>address</th><th>state</th><th>rtt</th><th>backlog</th>"
            "<th>hostname</th><th>pid</th><th>started</th><th>version</th><th>key</th>"
            "<th>expires in</th></tr>"
        )
        for server in target.servers:
            row = _server_row(server, snapshot.taken_at)
            ping_row = _ping_row(server, pings.get(server.endpoint))
            css = "alive" if ping_row[2].startswith("alive") else "dead"
            cells = [row[0], row[1]]
            cells_html = "".join(f"<td>{e(c)}</td>" for c in cells)
            cells_html += f"<td class='{css}'>{e(ping_row[2])}</td>"
            cells_html += "".join(f"<td>{e(c)}</td>" for c in ping_row[3:] + row[2:])
            parts.append(f"<tr>{cells_html}</tr>")
        parts.append("</table>")
    parts.append("<h2>Notifications</h2>")
    if snapshot.backlogs is None:
        parts.append("<p class='muted'>Not available.</p>")
    elif not snapshot.backlogs:
        parts.append("<p>No notification stream.</p>")
    else:
        parts.append(
            "<table><tr><th>stream</th><th>pool</th><th>backlog</th><th>oldest unread</th>"
            "<th>dropped by retention</th></tr>"
        )
        for b in snapshot.backlogs:
            cells = backlog_cells(snapshot, b)
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
