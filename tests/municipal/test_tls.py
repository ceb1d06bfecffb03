"""The adapter delivers over https to a platform whose certificate comes from a private CA (`ca_file`); a
certificate it does not trust is a connection error like any other: retried, recorded, nothing lost."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import re
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import REGISTRY

from services.common.runtime import Resources
from services.municipal.emulator import Faults, Platform, RunningEmulator, run, start_emulator
from services.municipal.emulator_args import add_arguments
from services.municipal.model import idempotency_key
from tests.municipal.conftest import StartAdapter, destination
from tests.municipal.helpers import SECRET, eventually, insert, lot_dynamic
from tests.municipal.test_delivery import caught_up, delivered, status_of

ROOT = Path(__file__).resolve().parents[2]
UNAVAILABLE = 14  # google.rpc.Code of an error without an HTTP answer


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost, valid for a day."""
    d = tmp_path_factory.mktemp("municipal-pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_name = ec.generate_private_key(ec.SECP256R1()), _name("v2x municipal test CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.SubjectAlternativeName(
                  [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pki = Pki(d / "ca.pem", d / "server.pem", d / "server.key")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    pki.server_key.write_bytes(_pem_key(key))
    return pki


@pytest.fixture
async def tls_emulator(pki: Pki) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(Platform([SECRET], 300.0, Faults(), seed=7), tls_cert=pki.server_cert,
                                   tls_key=pki.server_key)
    yield running
    await running.stop()


def requests_without_answer(name: str) -> float:
    """Delivery attempts of destination `name` that got no HTTP answer (the adapter's status "0" counter)."""
    value = REGISTRY.get_sample_value("v2x_municipal_requests_total", {"destination": name, "status": "0"})
    return float(value or 0.0)


async def test_records_reach_an_https_platform_once_each_when_its_ca_is_trusted(
        resources: Resources, tls_emulator: RunningEmulator, pki: Pki, start_adapter: StartAdapter,
        unique: str) -> None:
    dest = destination(tls_emulator, batch_size=10, ca_file=str(pki.ca))
    assert dest.url.startswith(f"https://127.0.0.1:{tls_emulator.port}/")
    a = await start_adapter(dest)
    lots = [f"H{unique}-{i}" for i in range(3)]
    ids = {lot: await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for seq in range(1, 11)])
           for lot in lots}
    s = await caught_up(a)
    p = tls_emulator.platform
    expected = {idempotency_key(a.name, i) for lot_ids in ids.values() for i in lot_ids}
    assert set(p.seen) == expected
    assert p.stats.accepted == len(expected) == 30 and p.stats.duplicates == 0 and p.stats.requests >= 3
    assert all(p.lots[(a.name, lot)] == ids[lot] for lot in lots)
    assert delivered(s) == 30 and not s.HasField("last_error")
    assert requests_without_answer(a.name) == 0


async def test_a_certificate_the_destination_does_not_trust_holds_records_back_with_the_error_recorded(
        resources: Resources, tls_emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(tls_emulator))  # no ca_file: the test CA is not trusted
    before = await status_of(a)
    lot = f"U{unique}"
    await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for seq in range(1, 6)])

    async def retried_or_through() -> bool:
        # Stops early when a request got through, so that a lane that trusts anything fails on the asserts below.
        return requests_without_answer(a.name) >= 3 or tls_emulator.platform.stats.requests > 0

    await eventually(retried_or_through, what="failed TLS handshakes retried")
    s = await status_of(a)
    assert s.last_error.code == UNAVAILABLE and "CERTIFICATE_VERIFY_FAILED" in s.last_error.message
    assert s.lag_records == 5 and s.lag_s > 0 and s.cursor == before.cursor
    assert delivered(s) == 0 and s.dead_letters == 0 and not s.paused
    assert not tls_emulator.platform.seen and tls_emulator.platform.stats.requests == 0


async def test_records_held_back_by_an_untrusted_certificate_arrive_once_each_when_the_ca_is_trusted(
        resources: Resources, tls_emulator: RunningEmulator, pki: Pki, start_adapter: StartAdapter,
        unique: str) -> None:
    untrusting = destination(tls_emulator)
    a = await start_adapter(untrusting)
    lot = f"V{unique}"
    ids = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for seq in range(1, 6)])

    async def errored_or_through() -> bool:
        return (await status_of(a)).HasField("last_error") or bool(tls_emulator.platform.seen)

    await eventually(errored_or_through, what="the TLS failure recorded")
    assert not tls_emulator.platform.seen
    await a.service.stop(0.2)  # frees the destination's lock for the adapter that trusts the CA
    b = await start_adapter(dataclasses.replace(untrusting, ca_file=str(pki.ca)))
    s = await caught_up(b)
    p = tls_emulator.platform
    assert set(p.seen) == {idempotency_key(b.name, i) for i in ids} and p.stats.duplicates == 0
    assert p.lots[(b.name, lot)] == ids
    assert delivered(s) == 5 and s.dead_letters == 0 and not s.HasField("last_error")


async def test_the_platform_emulator_command_serves_https_with_tls_cert_and_key(pki: Pki) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "platform-emulator", "--port", "0", "--secret", SECRET,
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(_line_with(proc.stdout, "platform emulator on"), 60)
        found = re.search(r"on https://127\.0\.0\.1:(\d+) ", banner)
        assert found, banner
        trust = ssl.create_default_context(cafile=str(pki.ca))
        async with aiohttp.ClientSession() as http, http.get(
                f"https://127.0.0.1:{found[1]}/healthz", ssl=trust) as r:
            assert r.status == 200 and await r.json() == {"ok": True}
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _line_with(stream: asyncio.StreamReader, text: str) -> str:
    while line := (await stream.readline()).decode(errors="replace"):
        if text in line:
            return line
    raise AssertionError(f"the command ended without printing {text!r}")


@pytest.mark.parametrize(("given", "message"), [
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-key", "key.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "{ca}", "--tls-key", "{key}"], "cannot use --tls-cert/--tls-key"),
])
async def test_the_platform_emulator_command_refuses_an_incomplete_or_mismatched_tls_pair(
        pki: Pki, given: list[str], message: str) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # The CA's certificate with the server's key: a pair that does not belong together.
    ns = parser.parse_args(["--secret", SECRET, *(a.format(ca=pki.ca, key=pki.server_key) for a in given)])
    with pytest.raises(SystemExit, match=re.escape(message)):
        await run(ns, {})
