from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
from grpc import aio
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from typing import TypeAlias

    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub

    Stub: TypeAlias = ParkingServiceAsyncStub
else:
    Stub = ParkingServiceStub

from tests.conftest import Keys
from tests.parking.helpers import lot

NewLot = Callable[..., Awaitable[str]]


@pytest.fixture
def stub(parking_channel: aio.Channel) -> Stub:
    return ParkingServiceStub(parking_channel)


@pytest.fixture
def new_lot(stub: Stub, keys: Keys, unique: str) -> NewLot:
    """Registers a lot (admin) and returns its id; keyword arguments go to helpers.lot()."""
    count = 0

    async def make(**kwargs: object) -> str:
        nonlocal count
        count += 1
        lot_id = f"T-{unique}-{count}"
        await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(lot_id, **kwargs)),  # type: ignore[arg-type]
                               metadata=keys.md(keys.admin))
        return lot_id

    return make
