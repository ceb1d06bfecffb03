"""WhoAmI: every server tells a key's role and scope, and refuses an unknown key."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from v2x.common.v1 import common_pb2, identity_pb2, identity_pb2_grpc

from tests.conftest import Keys


async def test_every_role_learns_its_own_role_and_scope(parking_channel: aio.Channel, keys: Keys) -> None:
    stub = identity_pb2_grpc.IdentityServiceStub(parking_channel)
    for key, role, scope in ((keys.police, common_pb2.ROLE_POLICE, ""), (keys.driver, common_pb2.ROLE_DRIVER, ""),
                             (keys.op_a, common_pb2.ROLE_OPERATOR, "OPA"),
                             (keys.camera, common_pb2.ROLE_CAMERA, "cam-1")):
        reply = await stub.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=Keys.md(key))
        assert (reply.role, reply.scope) == (role, scope)
        assert reply.key_id and reply.key_id in key and reply.key_id != key


async def test_an_unknown_key_is_unauthenticated(parking_channel: aio.Channel, keys: Keys) -> None:
    stub = identity_pb2_grpc.IdentityServiceStub(parking_channel)
    for md in ((("authorization", "Bearer v2x_000000000000_nope"),), ()):
        with pytest.raises(aio.AioRpcError) as err:
            await stub.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
