"""TLS and mutual TLS from config, with a CA the test makes."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import Settings
from services.common.runtime import Resources, start_service
from services.parking.app import build


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Name, *, ca: bool = False,
           server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    signer = key if ca else issuer_key
    return builder.sign(signer, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue("v2x test CA", None, _name("v2x test CA"), ca=True)  # type: ignore[arg-type]
    server_cert, server_key = _issue("localhost", ca_key, ca_cert.subject, server=True)
    client_cert, client_key = _issue("operator-ACME", ca_key, ca_cert.subject)

    def write(name: str, data: bytes) -> Path:
        (d / name).write_bytes(data)
        return d / name

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    pem = serialization.Encoding.PEM
    return Pki(write("ca.pem", ca_cert.public_bytes(pem)), write("server.pem", server_cert.public_bytes(pem)),
               write("server.key", pem_key(server_key)), write("client.pem", client_cert.public_bytes(pem)),
               write("client.key", pem_key(client_key)))


async def _serve(settings: Settings, resources: Resources, env: dict[str, str]) -> AsyncIterator[int]:
    tls_settings = Settings.from_env(
        {"DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "", **env})
    res = Resources(tls_settings, resources.engine, resources.redis, resources.verifier, resources.reads)
    running = await start_service(build, res, port=0, host="127.0.0.1")
    yield running.server.port
    await running.stop(0)


@pytest.fixture
async def tls_port(settings: Settings, resources: Resources, pki: Pki) -> AsyncIterator[int]:
    async for port in _serve(settings, resources, {"V2X_TLS_CERT": str(pki.server_cert),
                                                   "V2X_TLS_KEY": str(pki.server_key)}):
        yield port


@pytest.fixture
async def mtls_port(settings: Settings, resources: Resources, pki: Pki) -> AsyncIterator[int]:
    async for port in _serve(settings, resources, {"V2X_TLS_CERT": str(pki.server_cert),
                                                   "V2X_TLS_KEY": str(pki.server_key),
                                                   "V2X_TLS_CLIENT_CA": str(pki.ca)}):
        yield port


async def _check(channel: aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


async def test_tls_server_answers_a_client_that_trusts_the_ca(tls_port: int, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with aio.secure_channel(f"localhost:{tls_port}", creds) as ch:
        assert await _check(ch) == health_pb2.HealthCheckResponse.SERVING


async def test_tls_server_refuses_plaintext(tls_port: int) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{tls_port}") as ch:
        with pytest.raises(aio.AioRpcError) as err:
            await _check(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate(mtls_port: int, pki: Pki) -> None:
    anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with aio.secure_channel(f"localhost:{mtls_port}", anonymous) as ch:
        with pytest.raises(aio.AioRpcError) as err:
            await _check(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes(),
                                             private_key=pki.client_key.read_bytes(),
                                             certificate_chain=pki.client_cert.read_bytes())
    async with aio.secure_channel(f"localhost:{mtls_port}", with_cert) as ch:
        assert await _check(ch) == health_pb2.HealthCheckResponse.SERVING


async def test_client_certificate_from_another_ca_is_refused(mtls_port: int, pki: Pki,
                                                             tmp_path: Path) -> None:
    rogue_ca, rogue_key = _issue("rogue CA", None, _name("rogue CA"), ca=True)  # type: ignore[arg-type]
    cert, key = _issue("intruder", rogue_key, rogue_ca.subject)
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM))
    async with aio.secure_channel(f"localhost:{mtls_port}", creds) as ch:
        with pytest.raises(aio.AioRpcError) as err:
            await _check(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
