"""The console's gRPC clients: one channel per service, every call made with the caller's own key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from grpc import aio
from v2x.charging.v1 import charging_pb2_grpc
from v2x.common.v1 import identity_pb2_grpc
from v2x.idps.v1 import idps_pb2_grpc
from v2x.municipal.v1 import municipal_pb2_grpc
from v2x.parking.v1 import parking_pb2_grpc
from v2x.roadside.v1 import roadside_pb2_grpc

Metadata = tuple[tuple[str, str], ...]
# A browser waits on these: an unary call that takes longer is answered 504.
CALL_TIMEOUT_S = 10.0
# round_robin: a target that resolves to several replicas (a headless Service, infra/k8s) gets calls spread over all
# of them, not pinned to the first address; the servers' max connection age makes the channel re-resolve.
_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000), ("grpc.lb_policy_name", "round_robin")]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Backends:
    channels: dict[str, aio.Channel]
    identity: identity_pb2_grpc.IdentityServiceAsyncStub
    idps: idps_pb2_grpc.IdpsServiceAsyncStub
    parking: parking_pb2_grpc.ParkingServiceAsyncStub
    charging: charging_pb2_grpc.ChargingServiceAsyncStub
    roadside: roadside_pb2_grpc.RoadsideServiceAsyncStub
    municipal: municipal_pb2_grpc.MunicipalAdminServiceAsyncStub

    @classmethod
    def connect(cls, targets: Mapping[str, str]) -> Backends:
        ch = {name: aio.insecure_channel(target, options=_OPTIONS) for name, target in targets.items()}
        return cls(ch, identity_pb2_grpc.IdentityServiceStub(ch["idps"]), idps_pb2_grpc.IdpsServiceStub(ch["idps"]),
                   parking_pb2_grpc.ParkingServiceStub(ch["parking"]),
                   charging_pb2_grpc.ChargingServiceStub(ch["charging"]),
                   roadside_pb2_grpc.RoadsideServiceStub(ch["roadside"]),
                   municipal_pb2_grpc.MunicipalAdminServiceStub(ch["municipal"]))

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


BACKENDS: web.AppKey[Backends] = web.AppKey("backends", Backends)
