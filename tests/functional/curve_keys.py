"""CURVE key pairs made by the zmqdriver-keys command, and role config files using them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class Keys:
    """Key pairs made by zmqdriver-keys; the servers allow 'client' only."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "keys"
        self.allowed = root / "allowed"
        for name in ("server", "client", "stranger"):
            keytool("create", str(self.dir), name)
        keytool("allow", str(self.dir / "client.key"), str(self.allowed))

    def secret(self, name: str) -> str:
        return str(self.dir / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.dir / f"{name}.key")


def keytool(*args: str) -> str:
    script = shutil.which("zmqdriver-keys")
    assert script, "zmqdriver-keys is not on PATH: pip install -e ."
    done = subprocess.run([script, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def role_config(deployment, role: str, **zmq_options) -> str:
    """The deployment's config file plus options of one role (its keys)."""
    # write_config ends with the [oslo_messaging_zmq] section: append to it.
    with open(deployment.config_file) as handle:
        text = handle.read()
    text += "".join(f"{name} = {value}\n" for name, value in zmq_options.items())
    path = os.path.join(deployment.tmpdir, f"{role}.conf")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def server_config(deployment, keys: Keys) -> str:
    return role_config(
        deployment,
        "curve-server",
        zmq_curve_enabled=True,
        zmq_curve_secret_key_file=keys.secret("server"),
        zmq_curve_allowed_keys_dir=keys.allowed,
    )
