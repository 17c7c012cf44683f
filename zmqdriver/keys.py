"""zmqdriver-keys: create, list, allow and revoke CURVE keys for zmq_curve_* options.

    zmqdriver-keys create DIR NAME     write DIR/NAME.key and DIR/NAME.key_secret (0600)
    zmqdriver-keys list DIR            the key files of DIR with their public keys
    zmqdriver-keys allow KEYFILE DIR   copy a public key file into an allowed-keys directory
    zmqdriver-keys revoke KEY DIR      remove a key from an allowed-keys directory

The files are those of zmq.auth (``create_certificates``/``load_certificate``):
NAME.key_secret goes to zmq_curve_secret_key_file, NAME.key is given to the
servers that should accept NAME (their zmq_curve_allowed_keys_dir).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import zmq.auth

from zmqdriver.addressing import is_z85_key


class KeyToolError(Exception):
    """A problem to report in one line, with exit status 1."""


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or os.sep in name or (os.altsep and os.altsep in name):
        raise KeyToolError(f"invalid key name {name!r}: use a plain file name such as 'compute-1'")


def create(directory: str, name: str) -> tuple[str, str]:
    """Write a new key pair; returns (public file, secret file). Never overwrites."""
    _check_name(name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    base = os.path.join(directory, name)
    for path in (f"{base}.key", f"{base}.key_secret"):
        if os.path.exists(path):
            raise KeyToolError(f"{path} exists; remove it first or choose another name")
    # The umask keeps the secret file private from its creation on, not only
    # after a chmod; the public file is then opened up for reading.
    previous = os.umask(0o077)
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(previous)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return public_file, secret_file


def _load(path: str) -> tuple[str, bool]:
    """(Z85 public key, holds a secret key too) of a key file; KeyToolError if not one."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyToolError(f"{path}: not a readable key file: {exc}") from None
    key = public.decode("latin-1")
    if not is_z85_key(key):
        raise KeyToolError(f"{path}: the public key is not a 40-character Z85 string")
    return key, secret is not None


def read_public_key(path: str) -> str:
    """The Z85 public key of a key file; KeyToolError if it is not one."""
    return _load(path)[0]


def list_keys(directory: str) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Rows (name, public key, has a secret file) of the '.key' files of ``directory``,
    and the problems of the files that are not valid keys."""
    if not os.path.isdir(directory):
        raise KeyToolError(f"{directory}: not a directory")
    rows, problems = [], []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or not entry.endswith(".key"):
            continue
        name = entry[: -len(".key")]
        try:
            key = read_public_key(os.path.join(directory, entry))
        except KeyToolError as exc:
            problems.append(str(exc))
            continue
        has_secret = os.path.exists(os.path.join(directory, f"{name}.key_secret"))
        rows.append((name, key, has_secret))
    return rows, problems


def allow(key_file: str, directory: str) -> str:
    """Copy the public key of ``key_file`` into ``directory``; returns the new file."""
    _, secret = _load(key_file)
    if secret:
        raise KeyToolError(
            f"{key_file} holds a secret key: give the public '.key' file, secrets stay put"
        )
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(key_file)
    if not name.endswith(".key"):
        name += ".key"  # servers read only '*.key' files
    target = os.path.join(directory, name)
    with open(key_file, "rb") as handle:
        content = handle.read()
    # Written beside the target under a hidden name, then renamed: a server
    # reloading the directory never reads half a file.
    fd, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return target


def revoke(key: str, directory: str) -> list[str]:
    """Remove a client's key from an allowed-keys ``directory``; returns the removed files.

    ``key`` is a name as ``list`` shows it (the file ``NAME.key`` of ``directory``), a key
    file, or a Z85 public key. Every '.key' file of ``directory`` holding that public key
    goes, so a copy under another name does not keep the client in.
    """
    if not os.path.isdir(directory):
        raise KeyToolError(f"{directory}: not a directory")
    named = os.path.join(directory, key if key.endswith(".key") else f"{key}.key")
    if os.sep not in key and os.path.isfile(named):
        doomed = {named}
        try:
            public = read_public_key(named)
        except KeyToolError:
            public = None  # a broken file grants nothing, but it goes all the same
    elif os.path.isfile(key):
        doomed, public = set(), read_public_key(key)
    elif is_z85_key(key):
        doomed, public = set(), key
    else:
        raise KeyToolError(
            f"{key!r} is not allowed in {directory}: no file {os.path.basename(named)} there, "
            "and it is neither a key file nor a Z85 public key (see 'zmqdriver-keys list')"
        )
    if public is not None:
        for name, listed, _ in list_keys(directory)[0]:
            if listed == public:
                doomed.add(os.path.join(directory, f"{name}.key"))
    if not doomed:
        raise KeyToolError(f"no key file in {directory} holds the public key {public}")
    for path in sorted(doomed):
        os.unlink(path)
    return sorted(doomed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zmqdriver-keys",
        description="Manage the CURVE keys of zmqdriver (zmq_curve_* options). "
        "Run 'zmqdriver-keys COMMAND --help' for the arguments of a command.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary)

    make = command(
        "create",
        "Create a key pair: DIR/NAME.key (public, for servers' allowed-keys directories) "
        "and DIR/NAME.key_secret (mode 0600, for zmq_curve_secret_key_file). "
        "Never overwrites.",
    )
    make.add_argument("dir", metavar="DIR", help="directory to write to (created 0700 if missing)")
    make.add_argument("name", metavar="NAME", help="plain file name for the pair, e.g. compute-1")
    show = command("list", "List the '.key' files of DIR: name, public key, '(with secret)'.")
    show.add_argument(
        "dir", metavar="DIR", help="a key directory or an allowed-keys directory to list"
    )
    grant = command(
        "allow",
        "Let a client in: copy its public key file into a server's allowed-keys directory "
        "(zmq_curve_allowed_keys_dir; running servers see it within 2 seconds).",
    )
    grant.add_argument(
        "keyfile", metavar="KEYFILE", help="the client's public NAME.key file (never the secret)"
    )
    grant.add_argument("dir", metavar="DIR", help="the allowed-keys directory (created if missing)")
    deny = command(
        "revoke",
        "Shut a client out: remove every file of its public key from a server's allowed-keys "
        "directory. Running servers refuse its new connections within 2 seconds; connections "
        "already open stay up until they close.",
    )
    deny.add_argument(
        "key",
        metavar="KEY",
        help="the client: its name as 'list' shows it, its public key file, or its Z85 public key",
    )
    deny.add_argument("dir", metavar="DIR", help="the allowed-keys directory")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "create":
        public_file, secret_file = create(args.dir, args.name)
        print(f"public key: {read_public_key(public_file)}")
        print(f"wrote {public_file} (give to servers: zmq_curve_allowed_keys_dir)")
        print(f"wrote {secret_file} (mode 0600: zmq_curve_secret_key_file)")
    elif args.command == "list":
        rows, problems = list_keys(args.dir)
        for name, key, has_secret in rows:
            print(f"{name}\t{key}" + ("\t(with secret)" if has_secret else ""))
        if problems:
            raise KeyToolError("; ".join(problems))
    elif args.command == "allow":
        print(f"wrote {allow(args.keyfile, args.dir)}")
    else:
        for path in revoke(args.key, args.dir):
            print(f"removed {path}")


def _keys_as_arguments(argv: list[str]) -> list[str]:
    """``argv`` with a ``--`` before a Z85 key that begins with '-'.

    '-' is one of Z85's characters, so about one public key in 85 begins with
    it, and argparse would take such a key for an unknown option.

    >>> _keys_as_arguments(["revoke", "-" * 40, "allowed"])[:2]
    ['revoke', '--']
    >>> _keys_as_arguments(["revoke", "--help"])
    ['revoke', '--help']
    """
    for position, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("-") and is_z85_key(arg):
            return [*argv[:position], "--", *argv[position:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_keys_as_arguments(sys.argv[1:] if argv is None else argv))
    try:
        _run(args)
    except (KeyToolError, OSError) as exc:
        print(f"zmqdriver-keys: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
