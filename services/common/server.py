"""The one server factory: every v2x service is built and stopped here.

It adds the standard health service (per-service status), reflection for the listed services, the
interceptor chain, TLS / mutual TLS from config, a Prometheus /metrics port, and a graceful stop on
SIGTERM / SIGINT (health turns NOT_SERVING, in-flight rpcs get `grace_s` to finish).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # the asyncio health servicer it publishes
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from v2x.common.v1 import identity_pb2

from services.common import identity
from services.common.apikeys import KeyVerifier
from services.common.config import Settings, TlsConfig
from services.common.interceptors import RpcInterceptor
from services.common.principal import Role

log = logging.getLogger("v2x.server")


@dataclass(frozen=True)
class ServiceDefinition:
    """One gRPC service to serve: how to add it and who may call each of its methods."""

    descriptor: ServiceDescriptor
    register: Callable[[aio.Server], None]
    policy: Mapping[str, frozenset[Role]]

    def full_policy(self) -> dict[str, frozenset[Role]]:
        missing = [m.name for m in self.descriptor.methods if m.name not in self.policy]
        unknown = set(self.policy) - {m.name for m in self.descriptor.methods}
        if missing or unknown:
            raise ValueError(f"{self.descriptor.full_name}: no policy for {missing}, policy for unknown {unknown}")
        return {f"/{self.descriptor.full_name}/{name}": roles for name, roles in self.policy.items()}


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    health: health_aio.HealthServicer
    service_names: tuple[str, ...]
    metrics_port: int | None = None
    _metrics_server: Any = field(default=None, repr=False)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


def passthrough(message: Any) -> bytes:
    """The response serializer of rpcs that may answer with their message already encoded (bytes): an answer
    assembled from cached encodings goes out as it is, instead of being parsed into a message to be encoded again."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def registration(servicer: object, service: ServiceDescriptor, messages: ModuleType,
                 encoded: Collection[str] = ()) -> Callable[[aio.Server], None]:
    """Adds `servicer`'s methods of `service` to a server as the generated `add_…_to_server` does, except that the
    methods named in `encoded` may answer with encoded messages (`passthrough`)."""
    unknown = set(encoded) - {m.name for m in service.methods}
    if unknown:
        raise ValueError(f"{service.full_name} has no methods {sorted(unknown)}")

    def add(server: aio.Server) -> None:
        handlers: dict[str, Any] = {}
        for m in service.methods:
            kind = {(False, False): grpc.unary_unary_rpc_method_handler,
                    (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, False): grpc.stream_unary_rpc_method_handler,
                    (True, True): grpc.stream_stream_rpc_method_handler}[(m.client_streaming, m.server_streaming)]
            serialize = passthrough if m.name in encoded else getattr(messages, m.output_type.name).SerializeToString
            handlers[m.name] = kind(getattr(servicer, m.name),
                                    request_deserializer=getattr(messages, m.input_type.name).FromString,
                                    response_serializer=serialize)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))

    return add


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


async def create_server(
    definitions: Sequence[ServiceDefinition],
    settings: Settings,
    verifier: KeyVerifier,
    *,
    port: int,
    host: str | None = None,
    metrics_port: int | None = None,
) -> RunningServer:
    """Builds and starts a server. `port=0` picks a free port (tests); the bound port is returned. Every server also
    answers WhoAmI (services/common/identity.py)."""
    definitions = [*definitions, ServiceDefinition(identity.SERVICE, registration(identity.IdentityServicer(),
                                                                                 identity.SERVICE, identity_pb2),
                                                   identity.POLICY)]
    policy: dict[str, frozenset[Role]] = {}
    for d in definitions:
        policy.update(d.full_policy())
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    if settings.max_connection_age_s > 0:
        # No max_connection_age_grace: the GOAWAY only moves new calls to a new connection, long streams
        # (Subscribe, WatchAvailability) stay where they are.
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)))
    server = aio.server(
        interceptors=[RpcInterceptor(verifier, policy)],
        options=options,
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = tuple(d.descriptor.full_name for d in definitions)
    for d in definitions:
        d.register(server)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME, "grpc.health.v1.Health"), server)
    address = f"{host or settings.bind_host}:{port}"
    bound = (
        server.add_secure_port(address, server_credentials(settings.tls)) if settings.tls
        else server.add_insecure_port(address)
    )
    if bound == 0:
        raise OSError(f"could not bind gRPC port {address}")
    await server.start()
    for name in names:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, bound, health, names)
    if metrics_port is not None:
        http, _thread = start_http_server(metrics_port, addr=host or settings.bind_host)
        running.metrics_port = http.server_port
        running._metrics_server = http
    return running


async def wait_for_stop_signal() -> None:
    """Returns on the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
