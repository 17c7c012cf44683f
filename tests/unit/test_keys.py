"""The zmqdriver-keys command: create, list, allow and revoke CURVE keys."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
import zmq
import zmq.auth

from zmqdriver import keys, security


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_writes_a_private_secret_and_a_public_key(tmp_path, capsys):
    directory = tmp_path / "keys"
    assert keys.main(["create", str(directory), "compute-1"]) == 0
    public_file, secret_file = directory / "compute-1.key", directory / "compute-1.key_secret"
    assert _mode(secret_file) == 0o600
    assert _mode(public_file) == 0o644
    assert _mode(directory) == 0o700
    pair = security.load_key_pair(str(secret_file))  # what zmq_curve_secret_key_file reads
    public, secret = zmq.auth.load_certificate(str(public_file))
    assert secret is None and public.decode() == pair.public
    assert pair.public in capsys.readouterr().out


def test_create_never_overwrites(tmp_path, capsys):
    assert keys.main(["create", str(tmp_path), "a"]) == 0
    before = (tmp_path / "a.key_secret").read_text()
    assert keys.main(["create", str(tmp_path), "a"]) == 1
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "a.key_secret").read_text() == before


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden"])
def test_create_rejects_names_that_are_not_plain_file_names(tmp_path, capsys, name):
    assert keys.main(["create", str(tmp_path / "k"), name]) == 1
    assert "invalid key name" in capsys.readouterr().err
    assert not (tmp_path / "evil.key").exists()


def test_list_shows_names_and_public_keys(tmp_path, capsys):
    a_public, _ = keys.create(str(tmp_path), "a")
    b_public, b_secret = keys.create(str(tmp_path), "b")
    os.unlink(b_secret)
    (tmp_path / "notes.txt").write_text("not a key")
    capsys.readouterr()
    assert keys.main(["list", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"a\t{keys.read_public_key(a_public)}\t(with secret)",
        f"b\t{keys.read_public_key(b_public)}",
    ]


def test_list_reports_broken_key_files_and_fails(tmp_path, capsys):
    keys.create(str(tmp_path), "good")
    (tmp_path / "junk.key").write_text("garbage\n")
    capsys.readouterr()
    assert keys.main(["list", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("good\t")
    assert "junk.key" in captured.err
    assert keys.main(["list", str(tmp_path / "missing")]) == 1


def test_allow_copies_the_public_key_into_the_allowed_dir(tmp_path):
    public_file, secret_file = keys.create(str(tmp_path / "mine"), "client-7")
    allowed = tmp_path / "allowed"
    assert keys.main(["allow", public_file, str(allowed)]) == 0
    copied = allowed / "client-7.key"
    assert copied.read_bytes() == open(public_file, "rb").read()
    assert os.listdir(allowed) == ["client-7.key"]  # no temporary file left behind
    # What a server's ZAP handler reads from zmq_curve_allowed_keys_dir:
    expected = security.load_key_pair(secret_file).public.encode()
    assert zmq.auth.load_certificates(str(allowed)) == {expected: True}


def test_allow_adds_the_suffix_servers_read(tmp_path):
    public_file, _ = keys.create(str(tmp_path), "x")
    renamed = tmp_path / "x.pub"
    shutil.copy(public_file, renamed)
    assert keys.main(["allow", str(renamed), str(tmp_path / "allowed")]) == 0
    assert (tmp_path / "allowed" / "x.pub.key").exists()


def test_allow_refuses_secret_files_and_non_keys(tmp_path, capsys):
    _, secret_file = keys.create(str(tmp_path), "x")
    allowed = tmp_path / "allowed"
    assert keys.main(["allow", secret_file, str(allowed)]) == 1
    assert "holds a secret key" in capsys.readouterr().err
    junk = tmp_path / "junk.key"
    junk.write_text("garbage")
    assert keys.main(["allow", str(junk), str(allowed)]) == 1
    assert keys.main(["allow", str(tmp_path / "missing.key"), str(allowed)]) == 1
    assert not allowed.exists() or os.listdir(allowed) == []


def _allowed_dir_with(tmp_path, *names):
    """An allowed-keys directory holding the public keys of clients ``names``."""
    allowed = tmp_path / "allowed"
    files = {}
    for name in names:
        public_file, _ = keys.create(str(tmp_path / "clients"), name)
        keys.allow(public_file, str(allowed))
        files[name] = public_file
    return allowed, files


def _loaded(allowed) -> set[bytes]:
    # What a server's ZAP handler reads from zmq_curve_allowed_keys_dir.
    return set(zmq.auth.load_certificates(str(allowed)))


@pytest.mark.parametrize("how", ["name", "file name", "key file", "public key"])
def test_revoke_removes_the_clients_key_from_the_allowed_dir(tmp_path, capsys, how):
    allowed, files = _allowed_dir_with(tmp_path, "a", "b")
    a_key = keys.read_public_key(files["a"])
    given = {
        "name": "a",
        "file name": "a.key",
        "key file": files["a"],
        "public key": a_key,
    }[how]
    capsys.readouterr()
    assert keys.main(["revoke", given, str(allowed)]) == 0
    assert capsys.readouterr().out == f"removed {allowed / 'a.key'}\n"
    assert sorted(os.listdir(allowed)) == ["b.key"]
    assert _loaded(allowed) == {keys.read_public_key(files["b"]).encode()}


def _public_key_file_beginning_with_a_dash(directory) -> tuple[str, str]:
    while True:  # about one key in 85 begins with '-'
        public, _ = zmq.curve_keypair()
        if public.startswith(b"-"):
            break
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "dash.key")
    with open(path, "w") as handle:
        handle.write(f'metadata\ncurve\n    public-key = "{public.decode()}"\n')
    return path, public.decode()


def test_revoke_takes_a_public_key_that_begins_with_a_dash(tmp_path, capsys):
    key_file, public = _public_key_file_beginning_with_a_dash(tmp_path / "clients")
    allowed = tmp_path / "allowed"
    keys.allow(key_file, str(allowed))
    assert keys.main(["revoke", public, str(allowed)]) == 0
    assert capsys.readouterr().out == f"removed {allowed / 'dash.key'}\n"
    assert os.listdir(allowed) == []


def test_revoke_removes_copies_of_the_key_under_other_names(tmp_path):
    allowed, files = _allowed_dir_with(tmp_path, "a")
    shutil.copy(files["a"], allowed / "a-again.key")
    assert keys.revoke("a", str(allowed)) == [str(allowed / "a-again.key"), str(allowed / "a.key")]
    assert os.listdir(allowed) == []


def test_revoke_of_a_key_not_allowed_fails_clearly(tmp_path, capsys):
    allowed, _ = _allowed_dir_with(tmp_path, "a")
    stranger, _ = keys.create(str(tmp_path / "others"), "stranger")
    capsys.readouterr()
    assert keys.main(["revoke", "nobody", str(allowed)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zmqdriver-keys: error: 'nobody' is not allowed in ")
    assert "no file nobody.key there" in err and "zmqdriver-keys list" in err
    assert keys.main(["revoke", stranger, str(allowed)]) == 1
    stranger_key = keys.read_public_key(stranger)
    assert (
        f"no key file in {allowed} holds the public key {stranger_key}" in capsys.readouterr().err
    )
    assert keys.main(["revoke", "a", str(tmp_path / "missing")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert os.listdir(allowed) == ["a.key"]


def test_revoke_by_name_removes_a_broken_key_file(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "junk.key").write_text("garbage\n")
    assert keys.revoke("junk", str(allowed)) == [str(allowed / "junk.key")]
    assert os.listdir(allowed) == []


@pytest.mark.parametrize("command", ["create", "list", "allow", "revoke"])
def test_help_of_every_command_describes_each_argument(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        keys.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    subparsers = next(a for a in keys._parser()._actions if a.choices)  # noqa: SLF001
    arguments = [a for a in subparsers.choices[command]._actions if a.dest != "help"]
    assert arguments
    for argument in arguments:
        assert argument.help, f"{command} {argument.metavar}: no help"
        assert argument.metavar in out.split("positional arguments:")[1]
        assert " ".join(argument.help.split()[:3]) in " ".join(out.split())


def test_top_level_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        keys.main(["--help"])
    out = capsys.readouterr().out
    assert all(f"    {name} " in out for name in ("create", "list", "allow", "revoke"))


def test_the_console_script_is_installed(tmp_path):
    script = shutil.which("zmqdriver-keys")
    assert script, "zmqdriver-keys is not on PATH: pip install -e ."
    done = subprocess.run(
        [script, "create", str(tmp_path), "svc"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([script, "list", str(tmp_path)], capture_output=True, text=True)
    assert listed.stdout.startswith("svc\t")
    usage = subprocess.run([script], capture_output=True, text=True)
    assert usage.returncode == 2 and "create" in usage.stderr
