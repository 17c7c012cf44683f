"""The pure parts of zmqdriver-status: grouping records into targets, verdicts, views."""

from __future__ import annotations

from zmqdriver.addressing import Endpoint, ServerInfo, encode_record, rpc_key
from zmqdriver.matchmaker.base import ListedRecord
from zmqdriver.notify.store import GroupBacklog
from zmqdriver.rpc.ping import PingResult
from zmqdriver.status import model, render

INFO = ServerInfo("node-1", 100, 1_700_000_000.0, "0.1.0")
A, B = (
    Endpoint("10.0.0.1", 4001),
    Endpoint("10.0.0.2", 4002, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
)


def listing() -> list[ListedRecord]:
    a, b = encode_record(A, INFO), encode_record(B)  # B: an older server, no info
    return [
        ListedRecord(rpc_key("p", "openstack", "compute"), a, 30.0),
        ListedRecord(rpc_key("p", "openstack", "compute", "n1"), a, 30.0),
        ListedRecord(rpc_key("p", "openstack", "compute"), b, None),
        ListedRecord(rpc_key("p", "openstack", "compute", "n2"), b, None),
        ListedRecord(rpc_key("p", "openstack", "compute"), "not json", 5.0),
        ListedRecord("p/generation", "token", None),
    ]


def test_records_group_into_targets_with_server_names():
    (target,) = model.build_targets("p", listing())
    assert target.label == "openstack/compute"
    assert [(s.name, s.endpoint, s.info, s.expires_in) for s in target.servers] == [
        ("n1", A, INFO, 30.0),
        ("n2", B, None, None),
    ]


def test_a_target_is_dead_when_no_server_answers():
    (target,) = model.build_targets("p", listing())
    assert model.dead_targets([target], None) == []  # not pinged: records are all we know
    pings = {A: PingResult(A, error="no answer"), B: PingResult(B, error="refused")}
    assert model.dead_targets([target], pings) == [target]
    pings[B] = PingResult(B, 0.001, {"backlog": 2, "hostname": "h", "pid": 7, "counters": {"x": 1}})
    assert model.dead_targets([target], pings) == []
    snapshot = model.Snapshot(taken_at=0.0, targets=[target], pings=pings)
    assert model.processes(snapshot) == {("h", 7): {"x": 1}}


def test_views_show_old_servers_fingerprints_and_dead_ones_safely():
    targets = model.build_targets("p", listing())
    pings = {A: PingResult(A, error="no answer within 2s"), B: PingResult(B, 0.002, {"backlog": 4})}
    snapshot = model.Snapshot(
        taken_at=1_700_000_060.0,
        targets=targets,
        pings=pings,
        prefix="p",
        backlogs=[GroupBacklog("p/notify/openstack/n.info", "pool/a<b>", 3, 61.0, 2)],
    )
    text = render.targets_text(snapshot)
    assert "(1m00s ago)" in text and "(older)" in text and "SHA256:84112785d109" in text
    pinged = render.ping_text(snapshot)
    assert "NOT ANSWERING (no answer within 2s)" in pinged and "2.00 ms" in pinged
    assert "openstack/n.info  a<b>" in render.backlogs_text(snapshot)
    page = render.page(snapshot)
    assert "a&lt;b&gt;" in page and "<script" not in page
    json_server = render.targets_json(snapshot)["targets"][0]["servers"][0]
    assert json_server["alive"] is False and json_server["age"] == 60.0
