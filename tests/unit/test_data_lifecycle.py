"""A user's data from claim to erasure: the claim preview, retry-safe claims and disconnects, erasure
of everything, token caches no row names, pruning, ETags, "sync now" (domain level, in-memory stores)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.connections import REASONS, ConnectionStatus, Plan
from shared.platform_auth import User
from shared.ports import Conflict, SyncJob, Teammate, WorkspaceMeeting
from shared.services.connect import AccountMismatch, ClaimExpired, ClaimMismatch
from shared.services.lifecycle import SECOND_PASS, Erasure, Pruner, SecretReconciler
from tests import fakes
from tests.fakes import WorkspaceMeetings
from tests.unit.test_sync_and_deploy import PERSONAL, WORK, event

ALICE = User("user-alice", Plan.PRO, email="alice@coagentor.example")
MALLORY = User("user-mallory", Plan.PRO)


def signed_in(world, user=ALICE, account=WORK, reconnect=None) -> str:
    """Start, sign in at Microsoft, come back: the claim code the page receives."""
    world.identity.next_account = account
    world.calendar.email = account[2]
    url = world.connect.start(user, reconnect)
    result = world.connect.complete({"code": "c", "state": url.split("state=")[1]})
    assert result.claim
    return result.claim


def rows(world):
    return fakes.UserRows(world.flows, world.claims, world.connections, world.meetings, world.index, world.states)


def erasure(world) -> tuple[Erasure, fakes.ErasureJobs, fakes.UserRows]:
    jobs, user_rows = fakes.ErasureJobs(), rows(world)
    return Erasure(rows=user_rows, secrets_store=world.secrets, jobs=jobs), jobs, user_rows


# ---------------------------------------------------------------- the claim preview
def test_the_preview_names_the_microsoft_account_without_using_the_claim(world):
    code = signed_in(world)
    preview = world.connect.preview(ALICE, code)
    assert (preview.email, preview.reconnect_id) == ("alice@contoso.com", None)
    assert world.accounts.list(ALICE.id) == []  # nothing connected until the person confirms
    assert world.connect.claim(ALICE, code).outcome == "connected"


def test_previewing_someone_elses_sign_in_destroys_it(world):
    code = signed_in(world)
    [cache] = world.secrets.values
    with pytest.raises(ClaimMismatch):
        world.connect.preview(MALLORY, code)
    with pytest.raises(ClaimExpired):
        world.connect.claim(ALICE, code)  # gone for its owner too: a planted sign-in never lands
    assert cache in world.secrets.purged and world.accounts.list(MALLORY.id) == []


def test_a_stale_sign_in_previews_as_expired_and_its_cache_goes(world):
    code = signed_in(world)
    world.clock.advance(11 * 60)
    with pytest.raises(ClaimExpired):
        world.connect.preview(ALICE, code)
    assert world.secrets.values == {}


def test_a_reconnect_with_another_microsoft_account_is_refused_at_the_preview_before_anyone_is_asked(world):
    """The page previews before asking "Reconnect <account>?": a different account is refused there,
    and the sign-in is destroyed, so the question is never asked only to be refused afterwards."""
    connected = world.connect.claim(ALICE, signed_in(world)).connection
    code = signed_in(world, account=PERSONAL, reconnect=connected.id)
    with pytest.raises(AccountMismatch):
        world.connect.preview(ALICE, code)
    with pytest.raises(ClaimExpired):
        world.connect.claim(ALICE, code)
    assert [c.email for c in world.accounts.list(ALICE.id)] == [connected.email]
    # The same account previews as the reconnect it is.
    assert world.connect.preview(ALICE, signed_in(world, reconnect=connected.id)).reconnect_id == connected.id


# ---------------------------------------------------------------- claims are safe to retry
def test_a_claim_interrupted_before_it_used_the_code_completes_on_retry_without_a_duplicate(world, monkeypatch):
    code = signed_in(world)
    real_take = world.claims.take

    def crash(code_hash):
        raise RuntimeError("storage unavailable")

    monkeypatch.setattr(world.claims, "take", crash)
    with pytest.raises(RuntimeError):
        world.connect.claim(ALICE, code)
    monkeypatch.setattr(world.claims, "take", real_take)
    again = world.connect.claim(ALICE, code)
    assert again.outcome == "connected"
    [conn] = world.accounts.list(ALICE.id)
    assert conn.id == again.connection.id and world.secrets.get(conn.secret_name) is not None
    with pytest.raises(ClaimExpired):
        world.connect.claim(ALICE, code)  # used now


def test_a_refresh_that_read_the_row_before_a_reconnect_cannot_overwrite_it(world):
    conn = world.connect_account(ALICE, WORK).connection
    world.connections.update(world.connections.get(ALICE.id, conn.id).failed(REASONS["access_revoked"]))
    stale = world.connections.get(ALICE.id, conn.id)
    again = world.connect.claim(ALICE, signed_in(world, reconnect=conn.id))
    assert again.outcome == "reconnected"
    # The refresh wakes up with its old copy: the old cache is gone, and its "failed" write is refused.
    with pytest.raises(Conflict):
        world.tokens.access_token(stale, force_refresh=True)
    now = world.connections.get(ALICE.id, conn.id)
    assert (now.status, now.secret_name) == (ConnectionStatus.ACTIVE, again.connection.secret_name)
    assert world.secrets.get(now.secret_name) is not None


def test_a_refresh_job_that_lost_the_race_is_dropped_quietly(world):
    conn = world.connect_account(ALICE, WORK).connection
    stale = world.connections.get(ALICE.id, conn.id)
    world.connections.update(replace(stale, email="alice@contoso.com"))  # someone wrote meanwhile
    with pytest.raises(Conflict):
        world.connections.update(stale.refreshed(world.clock.now(), None))


# ---------------------------------------------------------------- disconnect leaves nothing behind
def test_a_disconnect_that_fails_part_way_is_finished_by_the_retry(world):
    conn = world.connect_account(ALICE, WORK).connection
    world.calendar.add(event(world, "e1"))
    world.sync.sync(SyncJob(ALICE.id, conn.id))
    world.secrets.fail_deletes = 1
    with pytest.raises(RuntimeError):
        world.accounts.disconnect(ALICE.id, conn.id)
    assert [c.id for c in world.accounts.list(ALICE.id)] == [conn.id]  # still there to retry
    assert world.accounts.disconnect(ALICE.id, conn.id) is True
    assert world.accounts.list(ALICE.id) == [] and world.secrets.values == {}
    assert world.meetings.rows == {} and world.index.rows == {} and world.states.rows == {}


# ---------------------------------------------------------------- erasure
def _lots_of_data(world):
    work = world.connect_account(ALICE, WORK).connection
    personal = world.connect_account(ALICE, PERSONAL).connection
    for conn in (work, personal):
        world.calendar.email = conn.email
        world.calendar.add(event(world, f"e-{conn.id}"))
        world.sync.sync(SyncJob(ALICE.id, conn.id))
    world.sync.sync_now(ALICE.id, work.id)
    signed_in(world)  # a pending claim, with its own token cache
    world.connect.start(ALICE)  # a pending sign-in
    return work, personal


def test_erasure_removes_every_row_and_token_cache_of_the_user_and_nothing_of_others(world):
    bob = User("user-bob", Plan.PRO)
    bobs = world.connect_account(bob, ("uid-bob.tid", "tid", "bob@fabrikam.com")).connection
    _lots_of_data(world)
    service, jobs, _ = erasure(world)
    done = service.request(ALICE.id)
    assert done is not None and done.connections == 2 and done.secrets == 3
    assert jobs.jobs == [(ALICE.id, SECOND_PASS)]  # queued before anything was deleted
    assert world.accounts.list(ALICE.id) == []
    assert not [m for (u, _), m in world.meetings.rows.items() if u == ALICE.id]
    assert not [f for f in world.flows.rows.values() if f.user_id == ALICE.id]
    assert not [c for c in world.claims.rows.values() if c.user_id == ALICE.id]
    assert world.states.queued == {} and set(world.states.rows) <= {bobs.id}
    assert set(world.secrets.values) == {bobs.secret_name}  # Alice's caches deleted and purged
    assert [c.id for c in world.accounts.list(bob.id)] == [bobs.id]
    assert service.erase(ALICE.id).rows == 0  # the queued second pass finds nothing


@pytest.mark.parametrize("fail", ["vault", "tables"])
def test_an_erasure_that_fails_part_way_is_finished_by_its_queued_job(world, fail):
    _lots_of_data(world)
    service, jobs, user_rows = erasure(world)
    if fail == "vault":
        world.secrets.fail_deletes = 1
    else:
        user_rows.fail_after = 3
    assert service.request(ALICE.id) is None  # answered 202 "erasing": the job finishes it
    assert world.accounts.list(ALICE.id) != []  # the connection rows go last, so the retry finds them
    [(user, _)] = jobs.jobs
    service.erase(user)
    assert world.accounts.list(ALICE.id) == [] and world.secrets.values == {}
    assert world.meetings.rows == {} and world.claims.rows == {} and world.flows.rows == {}


def test_the_queued_pass_keeps_a_connection_made_right_after_the_erasure(world):
    _lots_of_data(world)
    jobs, user_rows = fakes.ErasureJobs(), rows(world)
    service = Erasure(rows=user_rows, secrets_store=world.secrets, jobs=jobs, clock=world.clock)
    assert service.request(ALICE.id) is not None
    [before] = jobs.before
    assert before == world.clock.now()
    world.clock.advance(5)  # within the 20 s before the queued pass: the user connects again
    again = world.connect_account(ALICE, WORK).connection
    world.calendar.add(event(world, "e-again"))
    world.sync.sync(SyncJob(ALICE.id, again.id))
    service.erase(ALICE.id, before=before, carried=jobs.connection_ids[0])  # the queued pass
    assert [c.id for c in world.accounts.list(ALICE.id)] == [again.id]
    assert again.secret_name in world.secrets.values  # its token cache is untouched
    assert again.id in world.states.rows  # its sync state
    assert [m for (u, _), m in world.meetings.rows.items() if u == ALICE.id]  # and its meetings


def test_the_queued_pass_still_erases_what_raced_the_first_one(world):
    jobs, user_rows = fakes.ErasureJobs(), rows(world)
    service = Erasure(rows=user_rows, secrets_store=world.secrets, jobs=jobs, clock=world.clock)
    service.request(ALICE.id)
    [before] = jobs.before
    # A claim in flight as the erasure ran stored its connection in the same instant.
    raced = world.connect_account(ALICE, WORK).connection
    service.erase(ALICE.id, before=before)
    assert world.accounts.list(ALICE.id) == [] and raced.secret_name not in world.secrets.values


def test_the_queued_pass_erases_the_sync_state_a_sync_that_raced_the_first_pass_wrote(world, monkeypatch):
    """A sync read the connection just before the first pass, claimed its sync state just after it, and
    then failed outright (Key Vault unreachable as it read the token): the connection row is gone by
    the queued pass, which still finds that partition by the connection ids the job carries."""
    conn = world.connect_account(ALICE, WORK).connection
    jobs = fakes.ErasureJobs()
    service = Erasure(rows=rows(world), secrets_store=world.secrets, jobs=jobs, clock=world.clock)
    read = world.connections.get

    def read_then_erase(user_id: str, connection_id: str):
        found = read(user_id, connection_id)
        if found is not None and not jobs.jobs:
            service.request(ALICE.id)  # the first pass runs while this sync holds what it read
        return found

    def unreachable(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Key Vault unreachable")

    monkeypatch.setattr(world.connections, "get", read_then_erase)
    monkeypatch.setattr(world.tokens, "access_token", unreachable)
    with pytest.raises(RuntimeError):
        world.sync.sync(SyncJob(ALICE.id, conn.id))
    assert conn.id in world.states.rows  # the raced sync left its sync state behind
    [carried] = jobs.connection_ids
    assert carried == (conn.id,)
    monkeypatch.setattr(world.connections, "get", read)
    service.erase(ALICE.id, before=jobs.before[0], carried=carried)  # the queued pass
    assert conn.id not in world.states.rows and conn.id not in world.states.queued


def test_a_sync_that_raced_an_erasure_and_found_the_token_gone_leaves_no_sync_state(world, monkeypatch):
    conn = world.connect_account(ALICE, WORK).connection
    service, jobs, _ = erasure(world)
    read = world.connections.get

    def read_then_erase(user_id: str, connection_id: str):
        found = read(user_id, connection_id)
        if found is not None and not jobs.jobs:
            service.request(ALICE.id)
        return found

    monkeypatch.setattr(world.connections, "get", read_then_erase)
    queued = list(world.jobs.syncs)
    report = world.sync.sync(SyncJob(ALICE.id, conn.id, reason="notified"))
    assert str(report.outcome) == "disconnected"
    assert conn.id not in world.states.rows and conn.id not in world.states.queued
    assert world.jobs.syncs == queued  # and no retry chain for a connection that is gone


# ---------------------------------------------------------------- claims cut short
def test_a_claim_interrupted_after_storing_its_connection_keeps_the_live_token_cache(world, monkeypatch):
    code = signed_in(world)
    monkeypatch.setattr(world.claims, "take", lambda code_hash: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        world.connect.claim(ALICE, code)  # stored the connection, then died before using the claim up
    monkeypatch.undo()
    [conn] = world.accounts.list(ALICE.id)
    world.clock.advance(3600)  # the claim row expires and the cleanup comes by
    assert world.connect.purge_expired() >= 1
    assert conn.secret_name in world.secrets.values and world.claims.rows == {}
    assert world.tokens.access_token(conn)[1].token  # the connection still works


# ---------------------------------------------------------------- the reconciler
def reconciler(world, grace=3600):
    world.secrets._now = world.clock.now
    return SecretReconciler(secrets_store=world.secrets, connections=world.connections, claims=world.claims,
                            clock=world.clock, grace=timedelta(seconds=grace), connection_pages=world.connections)


def test_the_reconciler_deletes_old_token_caches_no_row_names_and_keeps_the_rest(world):
    r = reconciler(world)
    conn = world.connect_account(ALICE, WORK).connection
    signed_in(world, account=PERSONAL)  # pending claim: named by its row
    world.secrets.set("outlook-cache-orphan-old", "{}")  # a crash left it behind
    world.secrets.set("outlook-client-secret", "app secret")  # not a token cache: never touched
    world.clock.advance(2 * 3600)
    world.secrets.set("outlook-cache-orphan-new", "{}")  # too young to judge: a sign-in may be writing its row
    assert r.run() == 1
    assert "outlook-cache-orphan-old" in world.secrets.purged
    assert {conn.secret_name, "outlook-cache-orphan-new", "outlook-client-secret"} <= set(world.secrets.values)
    assert len([n for n in world.secrets.values if n.startswith("outlook-cache-")]) == 3
    world.clock.advance(2 * 3600)
    assert r.run() == 1 and "outlook-cache-orphan-new" in world.secrets.purged


# ---------------------------------------------------------------- pruning
def pruner(world, **kw):
    return Pruner(meetings=world.meetings, connections=world.connections, accounts=world.accounts, rows=rows(world),
                  index=world.index, sync_state=world.states, clock=world.clock,
                  meeting_retention=timedelta(days=kw.get("meeting_days", 30)),
                  error_retention=timedelta(days=kw.get("error_days", 90)),
                  workspace_meetings=kw.get("workspace_meetings"))


def test_pruning_removes_long_past_meetings_long_dead_connections_and_orphaned_sync_rows(world):
    active = world.connect_account(ALICE, WORK).connection
    world.calendar.add(event(world, "soon"))
    world.sync.sync(SyncJob(ALICE.id, active.id))
    dead = world.connect_account(ALICE, PERSONAL).connection
    world.connections.update(world.connections.get(ALICE.id, dead.id).failed(REASONS["token_expired"]))
    world.states.rows["gone-connection"] = replace(world.states.rows[active.id], connection_id="gone-connection")
    assert pruner(world).run().orphaned_connections == 1  # nothing else is old yet
    assert len(world.meetings.rows) == 1 and len(world.accounts.list(ALICE.id)) == 2
    world.clock.advance(91 * 86400)
    result = pruner(world).run()
    assert (result.meetings, result.dead_connections) == (1, 1)
    assert [c.id for c in world.accounts.list(ALICE.id)] == [active.id]  # an active one is never pruned
    assert dead.secret_name not in world.secrets.values
    assert set(world.states.rows) == {active.id}


def test_pruning_forgets_shared_workspace_meetings_long_past_and_the_teammates_emails_they_name(world):
    shared = WorkspaceMeetings()
    now, ann = world.clock.now(), (Teammate("ann", "ann@x"),)
    shared.put(WorkspaceMeeting("w", "past", owner="ann", members=ann, end=now + timedelta(hours=1)))
    shared.put(WorkspaceMeeting("w", "later", owner="ann", members=ann, end=now + timedelta(days=40)))
    assert pruner(world, workspace_meetings=shared).run().workspace_meetings == 0
    world.clock.advance(31 * 86400)
    assert pruner(world, workspace_meetings=shared).run().workspace_meetings == 1
    assert [key for _, key in shared.rows] == ["later"]  # its meeting is not past the retention yet


# ---------------------------------------------------------------- sync now
def test_sync_now_queues_once_until_a_sync_starts(world):
    conn = world.connect_account(ALICE, WORK).connection
    world.jobs.syncs.clear()
    assert [world.sync.sync_now(ALICE.id, conn.id) for _ in range(3)] == ["queued"] * 3
    assert [j.reason for j, _ in world.jobs.syncs] == ["manual"]
    world.sync.sync(world.jobs.syncs[0][0])
    world.sync.sync_now(ALICE.id, conn.id)
    assert len(world.jobs.syncs) == 2  # the sync started: the next "sync now" queues again
    assert world.sync.sync_now(MALLORY.id, conn.id) == "not_found"
    world.connections.update(world.connections.get(ALICE.id, conn.id).failed(REASONS["access_revoked"]))
    assert world.sync.sync_now(ALICE.id, conn.id) == "connection_error"


def test_a_lost_sync_now_job_does_not_block_the_button_for_ever(world):
    conn = world.connect_account(ALICE, WORK).connection
    world.jobs.syncs.clear()
    world.sync.sync_now(ALICE.id, conn.id)
    world.clock.advance(11 * 60)
    world.sync.sync_now(ALICE.id, conn.id)
    assert len(world.jobs.syncs) == 2
