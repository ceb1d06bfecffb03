"""The smoke test's suite runs on a database of its own: its municipal adapter drains the whole outbox, which must
not be the one other packages' tests write and read."""

from __future__ import annotations

from tests.conftest import own_database

database_url, settings, resources, keys, parking_service, parking_channel = own_database("load")
