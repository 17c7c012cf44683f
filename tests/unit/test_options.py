"""Options of [oslo_messaging_zmq]: registration, validation, legacy names, sample."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from oslo_config import cfg

from zmqdriver import options

GROUP = options.GROUP

# A config file as deployments of the old in-tree driver wrote it: every option
# of its [oslo_messaging_zmq] group, with values of the types it accepted.
OLD_DRIVER_CONF = """\
[DEFAULT]
transport_url = zmq+redis://127.0.0.1:6379
rpc_response_timeout = 60

[oslo_messaging_zmq]
rpc_zmq_bind_address = *
rpc_zmq_host = myhost
rpc_zmq_matchmaker = redis
rpc_zmq_contexts = 1
rpc_zmq_topic_backlog = 100
rpc_zmq_ipc_dir = /var/run/openstack
rpc_poll_timeout = 1
zmq_target_expire = 300
zmq_target_update = 180
use_pub_sub = false
use_router_proxy = false
use_dynamic_connections = false
zmq_failover_connections = 2
rpc_zmq_min_port = 49153
rpc_zmq_max_port = 65536
rpc_zmq_bind_port_retries = 100
rpc_zmq_serialization = json
zmq_linger = -1
zmq_immediate = true
zmq_tcp_keepalive = -1
zmq_tcp_keepalive_idle = -1
zmq_tcp_keepalive_cnt = -1
zmq_tcp_keepalive_intvl = -1
rpc_thread_pool_size = 100
rpc_message_ttl = 300
rpc_use_acks = false
rpc_ack_timeout_base = 15
rpc_ack_timeout_multiplier = 2
rpc_retry_attempts = 3
subscribe_on = redis

[matchmaker_redis]
host = 127.0.0.1
port = 6379
"""

LEGACY_SET_IN_OLD_CONF = {opt.name for opt in options.legacy_ignored_opts}
IMPLEMENTED = {opt.name for opt in options.zmq_opts}


def make_conf(config_text: str | None = None, tmp_path: Path | None = None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    options.register(conf)
    files = []
    if config_text is not None:
        path = tmp_path / "zmqdriver.conf"
        path.write_text(config_text)
        files.append(str(path))
    conf(args=[], project="zmqdriver-test", default_config_files=files)
    return conf


@pytest.fixture(autouse=True)
def forget_warned_options(monkeypatch):
    # log_ignored warns once per process; each test starts from a clean slate.
    monkeypatch.setattr(options, "_warned_ignored", set())


# -- registration and validation -------------------------------------------------


def test_defaults_register_and_validate():
    conf = make_conf()
    options.validate(conf)
    zconf = conf[GROUP]
    assert zconf.rpc_zmq_min_port < zconf.rpc_zmq_max_port
    assert zconf.zmq_target_update < zconf.zmq_target_expire
    assert zconf.rpc_zmq_serialization == "json"
    assert zconf.rpc_zmq_bind_address is None
    assert zconf.rpc_zmq_host is None
    assert all(zconf[name] is None for name in LEGACY_SET_IN_OLD_CONF)


def test_register_twice_on_one_conf_is_harmless():
    # Several transports may share one ConfigOpts; each driver registers.
    conf = make_conf()
    options.register(conf)
    options.validate(conf)
    assert conf[GROUP].zmq_target_expire == 60


def test_validate_accepts_the_tightest_valid_values():
    conf = make_conf()
    conf.set_override("rpc_zmq_min_port", 5000, group=GROUP)
    conf.set_override("rpc_zmq_max_port", 5001, group=GROUP)
    conf.set_override("zmq_target_update", 4, group=GROUP)
    conf.set_override("zmq_target_expire", 5, group=GROUP)
    options.validate(conf)


@pytest.mark.parametrize(("low", "high"), [(6000, 6000), (6001, 6000)])
def test_validate_rejects_min_port_not_below_max_port(low, high):
    conf = make_conf()
    conf.set_override("rpc_zmq_min_port", low, group=GROUP)
    conf.set_override("rpc_zmq_max_port", high, group=GROUP)
    with pytest.raises(cfg.Error) as info:
        options.validate(conf)
    message = str(info.value)
    assert f"rpc_zmq_min_port ({low})" in message
    assert f"rpc_zmq_max_port ({high})" in message
    assert GROUP in message


@pytest.mark.parametrize(("update", "expire"), [(30, 30), (61, 60)])
def test_validate_rejects_update_not_below_expire(update, expire):
    conf = make_conf()
    conf.set_override("zmq_target_update", update, group=GROUP)
    conf.set_override("zmq_target_expire", expire, group=GROUP)
    with pytest.raises(cfg.Error) as info:
        options.validate(conf)
    message = str(info.value)
    assert f"zmq_target_update ({update})" in message
    assert f"zmq_target_expire ({expire})" in message


def test_a_config_file_sets_values(tmp_path):
    conf = make_conf(
        textwrap.dedent(
            """\
            [oslo_messaging_zmq]
            rpc_zmq_serialization = msgpack
            zmq_target_cache_ttl = 0.25
            zmq_dedup_window = 0
            """
        ),
        tmp_path,
    )
    zconf = conf[GROUP]
    assert zconf.rpc_zmq_serialization == "msgpack"
    assert zconf.zmq_target_cache_ttl == 0.25
    assert zconf.zmq_dedup_window == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("rpc_zmq_serialization", "pickle"),
        ("zmq_target_update", "0"),
        ("rpc_zmq_max_port", "65537"),
        ("rpc_zmq_min_port", "-1"),
        ("zmq_linger", "-2"),
        ("rpc_ack_timeout_base", "0"),
    ],
)
def test_out_of_range_values_are_rejected(tmp_path, name, value):
    conf = make_conf(f"[oslo_messaging_zmq]\n{name} = {value}\n", tmp_path)
    with pytest.raises(cfg.ConfigFileValueError):
        conf[GROUP][name]  # noqa: B018 - oslo.config checks values when read


# -- the old in-tree driver's config files ---------------------------------------


def test_old_driver_config_file_loads(tmp_path):
    conf = make_conf(OLD_DRIVER_CONF, tmp_path)
    zconf = conf[GROUP]
    # Reading every option parses its value: none may fail.
    values = {opt.name: zconf[opt.name] for opt in options.zmq_opts + options.legacy_ignored_opts}
    options.validate(conf)
    assert values["rpc_zmq_host"] == "myhost"
    assert values["rpc_zmq_bind_address"] == "*"
    assert values["zmq_target_expire"] == 300
    assert values["zmq_target_update"] == 180
    assert values["rpc_zmq_max_port"] == 65536
    assert values["use_router_proxy"] is False
    assert values["zmq_immediate"] is True
    assert values["rpc_zmq_matchmaker"] == "redis"
    assert values["rpc_zmq_ipc_dir"] == "/var/run/openstack"
    assert values["subscribe_on"] == ["redis"]


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("rpc_zmq_host = myhost", "rpc_zmq_host", "myhost"),
        ("rpc_zmq_bind_address = 10.0.0.5", "rpc_zmq_bind_address", "10.0.0.5"),
        ("rpc_zmq_min_port = 50000", "rpc_zmq_min_port", 50000),
        ("rpc_cast_timeout = 5", "zmq_linger", 5),
    ],
)
def test_old_driver_options_in_default_group_keep_their_meaning(tmp_path, line, name, value):
    conf = make_conf(f"[DEFAULT]\n{line}\n", tmp_path)
    assert conf[GROUP][name] == value


def _ignored_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == options.LOG.name and "is ignored by zmqdriver" in record.getMessage()
    ]


def _named_option(message: str) -> str:
    # "[oslo_messaging_zmq] NAME = VALUE is ignored by zmqdriver"
    return message.split("] ", 1)[1].split(" = ", 1)[0]


def test_log_ignored_warns_once_per_legacy_option_set(tmp_path, caplog):
    conf = make_conf(OLD_DRIVER_CONF, tmp_path)
    with caplog.at_level(logging.WARNING, logger=options.LOG.name):
        options.log_ignored(conf)
        options.log_ignored(conf)  # a second driver in the same process
    messages = _ignored_warnings(caplog)
    named = [_named_option(message) for message in messages]
    assert sorted(named) == sorted(LEGACY_SET_IN_OLD_CONF)  # each once, none twice
    assert not set(named) & IMPLEMENTED
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    assert "[oslo_messaging_zmq] use_router_proxy = False is ignored by zmqdriver" in messages
    assert "[oslo_messaging_zmq] rpc_zmq_matchmaker = 'redis' is ignored by zmqdriver" in messages


def test_log_ignored_skips_legacy_options_that_are_not_set(tmp_path, caplog):
    conf = make_conf(
        "[oslo_messaging_zmq]\nrpc_zmq_host = myhost\nzmq_immediate = true\n"
        "rpc_zmq_ipc_dir = /var/run/openstack\n",
        tmp_path,
    )
    with caplog.at_level(logging.WARNING, logger=options.LOG.name):
        options.log_ignored(conf)
    assert sorted(map(_named_option, _ignored_warnings(caplog))) == [
        "rpc_zmq_ipc_dir",
        "zmq_immediate",
    ]


def test_log_ignored_is_silent_with_defaults(caplog):
    conf = make_conf()
    with caplog.at_level(logging.DEBUG, logger=options.LOG.name):
        options.log_ignored(conf)
    assert _ignored_warnings(caplog) == []


# -- sample generation -----------------------------------------------------------


def test_list_opts_returns_the_group_with_documented_options():
    listed = options.list_opts()
    assert [group for group, _ in listed] == [GROUP]
    opts = listed[0][1]
    names = [opt.name for opt in opts]
    assert len(names) == len(set(names))
    assert set(names) == IMPLEMENTED | LEGACY_SET_IN_OLD_CONF
    undocumented = [opt.name for opt in opts if not (opt.help and opt.help.strip())]
    assert undocumented == []


def test_legacy_options_say_they_are_ignored():
    assert all(opt.help.startswith("Ignored") for opt in options.legacy_ignored_opts)
    assert not IMPLEMENTED & LEGACY_SET_IN_OLD_CONF


def test_legacy_options_are_deprecated_for_removal_with_a_reason():
    for opt in options.legacy_ignored_opts:
        assert opt.deprecated_for_removal, opt.name
        assert "ignores" in opt.deprecated_reason, opt.name
    assert not any(opt.deprecated_for_removal for opt in options.zmq_opts)


def _generator_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("oslo-config-generator")
    if beside_python.exists():
        return [str(beside_python)]
    on_path = shutil.which("oslo-config-generator")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "oslo_config.generator"]


def test_oslo_config_generator_prints_a_sample(tmp_path):
    result = subprocess.run(
        [*_generator_command(), "--namespace", "zmqdriver"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    sample = result.stdout
    assert "[oslo_messaging_zmq]" in sample
    assert "#rpc_zmq_bind_address = <None>" in sample
    assert "#rpc_zmq_host = <hostname>" in sample
    assert "#rpc_zmq_serialization = json" in sample
    assert "#use_router_proxy = <None>" in sample


REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "etc" / "zmqdriver.conf.sample"


def test_shipped_sample_config_is_current(tmp_path):
    fresh = tmp_path / "zmqdriver.conf.sample"
    result = subprocess.run(
        [
            *_generator_command(),
            "--config-file",
            str(REPO / "etc" / "oslo-config-generator" / "zmqdriver.conf"),
            "--output-file",
            str(fresh),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert SAMPLE.read_text() == fresh.read_text(), (
        "etc/zmqdriver.conf.sample is out of date: run "
        "oslo-config-generator --config-file etc/oslo-config-generator/zmqdriver.conf"
    )


def test_sample_config_marks_the_ignored_options_deprecated():
    sample = SAMPLE.read_text()
    for opt in options.legacy_ignored_opts:
        entry = sample.split(f"#{opt.name} = ", 1)[0].rsplit("\n\n", 1)[1]
        assert "DEPRECATED" in entry and "deprecated for removal" in entry, opt.name
    assert sample.count("deprecated for removal") == len(options.legacy_ignored_opts)


def test_options_reference_page_is_current():
    done = subprocess.run(
        [sys.executable, "tools/gen_options_doc.py", "--check"],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
