"""Throwaway TLS material for tests: a CA, a server and a client certificate it signs.

Made with the ``cryptography`` package (a test dependency), valid for a day.
The server certificate names ``localhost`` and ``127.0.0.1``, so hostname
checks pass against the loopback servers the tests start. A second,
unrelated CA lets tests present a certificate the servers must refuse.

``tls_redis`` and ``tls_sentinels`` are this session's TLS-only servers
(client certificates required), killed by PID at the end.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.redis_server import RedisServer
from tests.sentinel_fixture import SentinelCluster

# The TLS Redis's only user: its default user is off.
ACL_USER, ACL_PASSWORD = "alice", "secret"
ACL_ARGS = (
    "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all",
    "--user", "default", "off",
)  # fmt: skip
SENTINEL_MASTER_PASSWORD = "master-pw"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: ``ca`` signed ``server_*`` and ``client_*``; another CA signed ``stranger_*``."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path

    def redis_args(self, port: int) -> tuple[str, ...]:
        """redis-server arguments: TLS only on ``port``, client certificates required."""
        return (
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(self.server_cert),
            "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "yes",
        )  # fmt: skip

    def client_kwargs(self) -> dict[str, object]:
        """redis-py arguments of a client that trusts ``ca`` and shows the client certificate."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(self.client_cert),
            "ssl_keyfile": str(self.client_key),
        }

    def driver_options(self) -> dict[str, object]:
        """[oslo_messaging_zmq] options of a driver process that uses these files."""
        return {
            "zmq_redis_tls_enabled": True,
            "zmq_redis_tls_ca_file": str(self.ca),
            "zmq_redis_tls_cert_file": str(self.client_cert),
            "zmq_redis_tls_key_file": str(self.client_key),
        }


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usages: list[x509.ObjectIdentifier],
) -> x509.Certificate:
    """A certificate for ``subject``; self-signed CA when ``issuer`` is None."""
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _issue(
    directory: Path,
    name: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usages: tuple[x509.ObjectIdentifier, ...] = (),
) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    """Write ``name.crt`` and ``name.key``; return their paths and the key."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(f"zmqdriver-test-{name}", key, issuer, list(usages))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path, key


def make_tls_files(directory: Path) -> TlsFiles:
    """Create the CA and certificates of :class:`TlsFiles` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, _, ca_key = _issue(directory, "ca", None)
    signer = (_name("zmqdriver-test-ca"), ca_key)
    # Redis also shows its certificate as a client (replicas, sentinels).
    both = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    server_cert, server_key, _ = _issue(directory, "server", signer, both)
    client_cert, client_key, _ = _issue(directory, "client", signer, both[1:])
    _, _, other_ca_key = _issue(directory, "other-ca", None)
    other = (_name("zmqdriver-test-other-ca"), other_ca_key)
    stranger = _issue(directory, "stranger", other, both[1:])
    return TlsFiles(ca, server_cert, server_key, client_cert, client_key, stranger[0], stranger[1])


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """This session's CA and certificates (see the module docstring)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RedisServer]:
    """A TLS-only redis-server whose only user is ACL_USER (``default`` is off)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), ACL_ARGS, tls=tls_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_sentinels(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[SentinelCluster]:
    """A master, a replica and a sentinel, all TLS-only; the master has a password."""
    cluster = SentinelCluster(
        tmp_path_factory.mktemp("sentinel-tls"),
        replicas=1,
        sentinels=1,
        quorum=1,
        password=SENTINEL_MASTER_PASSWORD,
        tls=tls_files,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
