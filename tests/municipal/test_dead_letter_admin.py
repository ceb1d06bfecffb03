"""Dead letters through the admin service: RetryDeadLetters with `all` puts back every open dead letter of one
destination, which is delivered once the cause is gone; ListDeadLetters pages through them newest first, each once."""

from __future__ import annotations

from v2x.common.v1 import common_pb2 as cpb
from v2x.municipal.v1 import municipal_pb2 as pb

from services.common.runtime import Resources
from services.municipal.emulator import RunningEmulator
from services.municipal.model import idempotency_key
from tests.municipal.conftest import Adapter, StartAdapter, destination, set_faults
from tests.municipal.helpers import eventually, insert, lot_dynamic
from tests.municipal.test_delivery import caught_up, delivered, status_of


async def list_all(a: Adapter, name: str, page_size: int, include_resolved: bool = False,
                   token: str = "") -> list[list[pb.DeadLetter]]:
    """Every page of a destination's dead letters, following the page tokens from `token`."""
    pages: list[list[pb.DeadLetter]] = []
    while True:
        reply = await a.stub.ListDeadLetters(pb.ListDeadLettersRequest(
            destination=name, include_resolved=include_resolved,
            page=cpb.PageRequest(page_size=page_size, page_token=token)), metadata=a.md)
        pages.append(list(reply.dead_letters))
        token = reply.page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "paging does not end"


def invalid(lot: str, sequence: int) -> tuple[str, str, dict[str, object]]:
    """A change the profile refuses (more free spaces than there are): a dead letter at once."""
    return "lot_dynamic", lot, {**lot_dynamic(lot, sequence), "free": {"general": 999}}


# ----- RetryDeadLetters with all ---------------------------------------------------------------------------------


async def test_retry_all_requeues_every_dead_letter_of_the_destination_and_they_arrive_once_the_cause_is_gone(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    refused = [f"DR{unique}-{i}" for i in range(3)]
    fine = f"DF{unique}"
    await set_faults(emulator, reject_aggregates=refused)
    # A small batch: the requeued records go back out over several requests.
    dest, other = destination(emulator, batch_size=2), destination(emulator)
    a = await start_adapter(dest, other)
    ids: dict[str, list[int]] = {lot: [] for lot in [*refused, fine]}
    for seq in (1, 2):
        for lot, got in zip(ids, await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq))
                                                                 for lot in ids]), strict=True):
            ids[lot].append(got)
    dead_ids = sorted(i for lot in refused for i in ids[lot])
    for d in (dest, other):
        s = await caught_up(a, d.name)
        assert s.dead_letters == 6 and delivered(s) == 2

    await set_faults(emulator, reject_aggregates=[])
    reply = await a.stub.RetryDeadLetters(pb.RetryDeadLettersRequest(destination=dest.name, all=True), metadata=a.md)
    assert reply.requeued == 6

    async def resolved() -> bool:
        return (await status_of(a, dest.name)).dead_letters == 0

    await eventually(resolved, what="every dead letter of the destination resolved")
    s = await status_of(a, dest.name)
    assert delivered(s) == 8 and s.lag_records == 0
    for lot in refused:  # each record once, in order
        assert emulator.platform.lots[(dest.name, lot)] == ids[lot]
    assert emulator.platform.stats.duplicates == 0
    (letters,) = await list_all(a, dest.name, 100, include_resolved=True)
    assert sorted(d.outbox_id for d in letters) == dead_ids
    assert {d.state for d in letters} == {pb.DEAD_LETTER_STATE_RESOLVED}
    # The other destination's dead letters stay where they were.
    (others,) = await list_all(a, other.name, 100)
    assert sorted(d.outbox_id for d in others) == dead_ids and {d.state for d in others} == {pb.DEAD_LETTER_STATE_OPEN}
    assert (await status_of(a, other.name)).dead_letters == 6
    assert not {idempotency_key(other.name, i) for i in dead_ids} & set(emulator.platform.seen)
    # Nothing is left to put back.
    again = await a.stub.RetryDeadLetters(pb.RetryDeadLettersRequest(destination=dest.name, all=True), metadata=a.md)
    assert again.requeued == 0


# ----- ListDeadLetters paging ------------------------------------------------------------------------------------


async def test_pages_hold_every_dead_letter_once_newest_first_whatever_the_page_size(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    dest, other = destination(emulator), destination(emulator)
    a = await start_adapter(dest, other)
    bad = await insert(resources.engine, [invalid(f"DP{unique}-{i % 3}", i) for i in range(7)])
    for d in (dest, other):
        assert (await caught_up(a, d.name)).dead_letters == 7
    (everything,) = await list_all(a, dest.name, 1000)
    expected = [d.id for d in everything]
    assert sorted(d.outbox_id for d in everything) == bad and expected == sorted(expected, reverse=True)
    assert {d.destination for d in everything} == {dest.name}
    for size in (1, 2, 3, 6, 7, 8):
        pages = await list_all(a, dest.name, size)
        assert [len(p) for p in pages] == [size] * (7 // size) + ([7 % size] if 7 % size else []), size
        assert [d.id for p in pages for d in p] == expected, size
        # The same listing again: the same pages.
        assert [[d.id for d in p] for p in await list_all(a, dest.name, size)] == [[d.id for d in p] for p in pages]


async def test_a_listing_in_progress_neither_repeats_nor_skips_when_new_dead_letters_arrive(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator))
    lot = f"DN{unique}"
    await insert(resources.engine, [invalid(lot, i) for i in range(7)])
    await caught_up(a)
    (before,) = await list_all(a, a.name, 1000)
    first = await a.stub.ListDeadLetters(pb.ListDeadLettersRequest(
        destination=a.name, page=cpb.PageRequest(page_size=3)), metadata=a.md)
    assert [d.id for d in first.dead_letters] == [d.id for d in before[:3]] and first.page.next_page_token

    newer = await insert(resources.engine, [invalid(lot, i) for i in range(7, 11)])
    assert (await caught_up(a)).dead_letters == 11
    rest = await list_all(a, a.name, 3, token=first.page.next_page_token)
    assert [d.id for p in rest for d in p] == [d.id for d in before[3:]]
    # A listing from the start has the new ones first.
    (now,) = await list_all(a, a.name, 1000)
    assert sorted(d.outbox_id for d in now[:4]) == newer and [d.id for d in now[4:]] == [d.id for d in before]
