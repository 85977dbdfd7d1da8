"""Timer singleton locks for several local host instances on one storage account.

In Azure every instance of a Function App runs the same timers, yet each timer fires once per
schedule: the host takes a *listener lock* per timer function (a blob lease under
`azure-webjobs-hosts/locks/<host id>/<function>.Listener`, SingletonOptions.ListenerLockPeriod,
1 minute by default, renewed while held); the instances that do not hold it try again every
ListenerLockRecoveryPollingInterval (1 minute). The schedule status (`Last`) is kept in storage too,
so the instance that takes the lock over fires a missed occurrence once, as past due, and never
fires one the previous holder already ran.

Azurite is shared by the instances here; this keeps the same lock as a Table Storage row per timer
(table `AzureWebJobsHostLocks`, PartitionKey = host id, RowKey = function name) updated with ETag
conditions, which gives the same guarantees as the blob lease: one holder at a time, a holder that
dies loses the lock when its period lapses. Times are this machine's clock (every instance runs on it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

log = logging.getLogger("devstack.host")

LOCK_TABLE = "AzureWebJobsHostLocks"


@dataclass
class _Held:
    until: float  # time.time() when our lease lapses unless renewed
    etag: str


class TimerLocks:
    """The listener locks and schedule status of one instance's timers.

    `acquire(name)` takes the lock if nobody holds it (or its holder's period lapsed) and returns
    whether this instance holds it; `renew_all()` extends every lock held (call it at half the
    period); `holds(name)` says whether this instance may still fire; `release_all()` frees them on
    a clean stop, so a peer takes over at its next recovery poll instead of after the period.
    Storage errors never raise: a lock that cannot be renewed is given up when its period ends.
    """

    def __init__(self, connection_string: str, *, host_id: str, instance_id: str, period: float) -> None:
        self.host_id = host_id
        self.instance_id = instance_id
        self.period = period
        self._connection_string = connection_string
        self._client: TableClient | None = None
        self._lock = threading.Lock()
        self._io = threading.Lock()  # this instance's own reads and writes of a row never race
        self._held: dict[str, _Held] = {}

    def _table(self) -> TableClient:
        if self._client is None:
            client = TableClient.from_connection_string(self._connection_string, LOCK_TABLE, retry_total=1,
                                                          connection_timeout=5, read_timeout=10)
            try:
                client.create_table()
            except ResourceExistsError:
                pass
            self._client = client
        return self._client

    def _row(self, name: str) -> dict[str, Any] | None:
        try:
            entity = self._table().get_entity(self.host_id, name.lower())
        except ResourceNotFoundError:
            return None
        return {**entity, "_etag": entity.metadata.get("etag")}

    def acquire(self, name: str) -> bool:
        """Take (or keep) the lock of timer `name`; False while another live instance holds it."""
        with self._io:
            return self._acquire(name)

    def _acquire(self, name: str) -> bool:
        now = time.time()
        until = now + self.period
        try:
            row = self._row(name)
            if row is None:
                entity = {"PartitionKey": self.host_id, "RowKey": name.lower(), "Holder": self.instance_id,
                          "LeaseUntil": until}
                meta = self._table().create_entity(entity)
            else:
                mine = row.get("Holder") == self.instance_id
                if not mine and float(row.get("LeaseUntil") or 0) > now:
                    self._forget(name)
                    return False
                entity = {**row, "Holder": self.instance_id, "LeaseUntil": until}
                meta = self._update(entity, self._etag_of(name, row))
        except (ResourceExistsError, ResourceModifiedError):
            self._forget(name)
            return False  # another instance got there first
        except (AzureError, ValueError) as error:
            log.warning("Timer lock %s: storage did not answer (%s)", name, error)
            return self.holds(name)
        with self._lock:
            self._held[name.lower()] = _Held(until=until, etag=str(meta.get("etag", "")))
        return True

    def _etag_of(self, name: str, row: dict[str, Any]) -> str | None:
        return str(row.get("_etag")) if row.get("_etag") else None

    def _update(self, entity: dict[str, Any], etag: str | None) -> dict[str, Any]:
        clean = {k: v for k, v in entity.items() if not k.startswith("_")}
        if etag:
            return dict(self._table().update_entity(clean, mode=UpdateMode.REPLACE, etag=etag,
                                                    match_condition=MatchConditions.IfNotModified))
        return dict(self._table().update_entity(clean, mode=UpdateMode.REPLACE))

    def _forget(self, name: str) -> None:
        with self._lock:
            self._held.pop(name.lower(), None)

    def holds(self, name: str) -> bool:
        with self._lock:
            held = self._held.get(name.lower())
        return held is not None and held.until > time.time()

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def renew_all(self) -> None:
        for name in self.held():
            if not self.acquire(name) and not self.holds(name):
                log.warning("Timer lock %s was lost: another instance fires it now", name)

    def release_all(self) -> None:
        for name in self.held():
            with self._io:
                self._release(name)

    def _release(self, name: str) -> None:
        try:
            row = self._row(name)
            if row is not None and row.get("Holder") == self.instance_id:
                self._update({**row, "LeaseUntil": 0.0}, self._etag_of(name, row))
        except (AzureError, ValueError):
            pass
        self._forget(name)

    # Schedule status, kept with the lock (Azure keeps it in a blob beside it).

    def last_scheduled(self, name: str, schedule: str) -> datetime | None:
        """The occurrence of `schedule` the last holder ran, if it ran this same schedule."""
        try:
            row = self._row(name)
        except (AzureError, ValueError):
            return None
        if row is None or row.get("Schedule") != schedule or not row.get("LastScheduled"):
            return None
        return datetime.fromisoformat(str(row["LastScheduled"])).astimezone(UTC)

    def record(self, name: str, schedule: str, scheduled: datetime) -> None:
        """Store the occurrence just run, while this instance holds the lock."""
        with self._io:
            self._record(name, schedule, scheduled)

    def _record(self, name: str, schedule: str, scheduled: datetime) -> None:
        try:
            row = self._row(name)
            if row is None or row.get("Holder") != self.instance_id:
                return
            self._update({**row, "Schedule": schedule, "LastScheduled": scheduled.isoformat()},
                         self._etag_of(name, row))
        except (AzureError, ValueError) as error:
            log.warning("Timer %s: its schedule status was not stored (%s)", name, error)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
