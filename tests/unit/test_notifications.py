"""Graph subscriptions and change notifications (domain level, in memory, controllable clock):
connecting subscribes, the timer renews well before expiry, lifecycle events renew, recreate or
resync, a genuine notification queues one sync per burst, and anything else changes nothing."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

import pytest

from shared.connections import REASONS, Connection, ConnectionStatus, Plan
from shared.platform_auth import User
from shared.ports import Conflict, SubscriptionJob, SyncJob
from shared.services import notifications as notifications_module
from shared.services.accounts import AccountsService
from shared.services.connect import ConnectService
from shared.services.lifecycle import SecretReconciler
from shared.services.notifications import (
    ClientStates,
    MalformedNotification,
    NotificationService,
    SyncRequests,
    validation_echo,
)
from shared.services.subscriptions import (
    CLIENT_STATE_PREFIX,
    REAUTHORIZE,
    RECREATE,
    RENEW,
    SUBSCRIBE,
    VERIFY,
    SubscriptionService,
)
from shared.services.sync import NOTIFIED
from tests.fakes_notifications import GraphSubscriptionsFake, SubscriptionJobsFake, SubscriptionsTable

ALICE = User("user-alice", Plan.PRO)
WORK = ("uid-a.tid-contoso", "tid-contoso", "alice@contoso.com")
URL = "https://app.example/api/outlook/notifications"


@dataclass
class RealTime:
    world: object
    graph: GraphSubscriptionsFake
    table: SubscriptionsTable
    sub_jobs: SubscriptionJobsFake
    subscriptions: SubscriptionService
    notifications: NotificationService
    connect: ConnectService
    accounts: AccountsService


@pytest.fixture
def rt(world) -> RealTime:
    """The production graph (shared/composition.py) over fakes: connecting subscribes, disconnecting
    releases the subscription, notifications queue syncs."""
    assert world.settings.notification_url == URL
    s = world.services
    return RealTime(world, world.graph_subscriptions, world.subscriptions_table, world.sub_jobs, s.subscriptions,
                    s.notifications, s.connect, s.accounts)


def connected(rt: RealTime):
    """Alice connects (the claim queues a sync and a subscribe job); the subscribe job runs."""
    w = rt.world
    w.identity.next_account = WORK
    url = rt.connect.start(ALICE, None)
    result = rt.connect.complete({"code": "c", "state": url.split("state=")[1]})
    conn = rt.connect.claim(ALICE, result.claim).connection
    [(job, _)] = rt.sub_jobs.jobs
    rt.sub_jobs.jobs.clear()
    assert rt.subscriptions.run(job) == "created"
    # The next reauthorization, planned 15 minutes before the authorizing (1-hour) token ends.
    [(planned, delay)] = rt.sub_jobs.jobs
    assert (planned.action, delay) == (REAUTHORIZE, timedelta(minutes=45))
    rt.sub_jobs.jobs.clear()
    w.jobs.syncs.clear()
    w.states.clear_queued(conn.id)  # as the queued sync would when it starts
    return conn


def body(*items: dict) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def change(rt: RealTime, conn, client_state: str | None = None, **extra) -> dict:
    record = rt.table.get(conn.id)
    genuine = rt.world.secrets.get(record.secret_name)
    return {"subscriptionId": record.subscription_id, "clientState": genuine if client_state is None else client_state,
            "changeType": "updated", "resource": "Users/u/Events/e", "tenantId": "t", **extra}


# ------------------------------------------------------------------ subscribing
def test_connecting_an_account_subscribes_to_its_calendar_with_a_secret_of_its_own(rt):
    conn = connected(rt)
    record = rt.table.get(conn.id)
    [created] = rt.graph.created
    assert record.subscription_id == created
    notification_url, lifecycle_url = rt.graph.urls[created]
    assert notification_url == f"{URL}?connection={conn.id}"
    assert lifecycle_url == f"{URL}/lifecycle?connection={conn.id}"
    # The clientState lives in Key Vault only, under a name of its own; the row only names it.
    assert record.secret_name.startswith(CLIENT_STATE_PREFIX)
    assert rt.world.secrets.get(record.secret_name) == rt.graph.client_states[created]
    assert len(rt.graph.client_states[created]) >= 43
    assert rt.graph.client_states[created] not in repr(record)


def test_a_new_subscription_asks_for_a_resync_for_changes_made_before_it_existed(rt, world):
    world.identity.next_account = WORK
    url = rt.connect.start(ALICE, None)
    conn = rt.connect.claim(ALICE, rt.connect.complete({"code": "c", "state": url.split("state=")[1]}).claim).connection
    world.jobs.syncs.clear()
    [(job, _)] = rt.sub_jobs.jobs
    rt.subscriptions.run(job)
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(conn.id, NOTIFIED)]


def test_reconnecting_renews_the_subscription_it_already_has(rt, world):
    conn = connected(rt)
    first = rt.table.get(conn.id)
    world.clock.advance(3600)
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, SUBSCRIBE)) == "renewed"
    assert rt.graph.renewed == [first.subscription_id] and len(rt.graph.created) == 1
    assert rt.table.get(conn.id).expires_at > first.expires_at


def test_a_subscription_graph_no_longer_knows_is_created_again_and_the_old_secret_goes(rt, world):
    conn = connected(rt)
    old = rt.table.get(conn.id)
    rt.graph.remove_behind_our_back(old.subscription_id)
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, RENEW)) == "recreated"
    new = rt.table.get(conn.id)
    assert new.subscription_id != old.subscription_id and new.secret_name != old.secret_name
    assert world.secrets.get(old.secret_name) is None and old.secret_name in world.secrets.deleted
    assert [j.reason for j, _ in world.jobs.syncs] == [NOTIFIED]  # what happened meanwhile is read


def test_a_removed_subscription_is_recreated_then_the_calendar_resynced(rt, world):
    conn = connected(rt)
    old = rt.table.get(conn.id)
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, RECREATE)) == "recreated"
    assert rt.table.get(conn.id).subscription_id != old.subscription_id
    assert old.subscription_id in rt.graph.deleted
    assert [j.reason for j, _ in world.jobs.syncs] == [NOTIFIED]


def test_a_lifetime_graph_refuses_is_asked_again_shorter(rt, world):
    rt.graph.max_lifetime = timedelta(minutes=4230)  # what the docs said until 2023
    conn = connected(rt)
    assert rt.table.get(conn.id).expires_at - world.clock.now() == timedelta(hours=70)


def test_a_refused_subscription_leaves_no_secret_behind_and_the_timer_tries_again(rt, world):
    world.identity.next_account = WORK
    url = rt.connect.start(ALICE, None)
    conn = rt.connect.claim(ALICE, rt.connect.complete({"code": "c", "state": url.split("state=")[1]}).claim).connection
    rt.graph.refuse_creates = 2  # the notification URL failed Graph's validation
    [(job, _)] = rt.sub_jobs.jobs
    rt.sub_jobs.jobs.clear()
    assert rt.subscriptions.run(job) == "refused:ValidationError"
    assert rt.table.get(conn.id) is None
    assert list(world.secrets.list(CLIENT_STATE_PREFIX)) == []
    rt.subscriptions.maintain()
    assert [(j.connection_id, j.action) for j, _ in rt.sub_jobs.jobs] == [(conn.id, SUBSCRIBE)]


def test_the_renew_timer_renews_well_before_expiry_and_nothing_sooner(rt, world):
    conn = connected(rt)
    expires = rt.table.get(conn.id).expires_at
    rt.subscriptions.maintain()
    assert rt.sub_jobs.jobs == []  # fresh: nothing to do
    world.clock.set(expires - timedelta(days=2, minutes=1))
    rt.subscriptions.maintain()
    assert rt.sub_jobs.jobs == []
    world.clock.set(expires - timedelta(days=1, hours=23))  # under two days left: renew, days ahead
    rt.subscriptions.maintain()
    [(job, _)] = rt.sub_jobs.jobs
    assert (job.connection_id, job.action) == (conn.id, RENEW)
    assert rt.subscriptions.run(job) == "renewed"
    assert rt.table.get(conn.id).expires_at > expires


def test_the_renew_timer_spaces_its_jobs_and_skips_connections_in_error(rt, world):
    for n in range(5):
        conn = world.connections.add(fakes_connection(f"c{n}", world), Plan.BUSINESS)
        if n == 4:
            world.connections.update(conn.failed(REASONS["token_expired"]))
    rt.subscriptions.maintain()
    delays = [d for _, d in rt.sub_jobs.jobs]
    assert [j.action for j, _ in rt.sub_jobs.jobs] == [SUBSCRIBE] * 4
    assert delays == [timedelta(seconds=n / 20) for n in range(4)]


def fakes_connection(cid: str, world) -> Connection:
    now = world.clock.now()
    return Connection(id=cid, user_id=ALICE.id, email=f"{cid}@contoso.com", home_account_id=f"{cid}.t",
                      tenant_id="t", status=ConnectionStatus.ACTIVE, reason_code=None, secret_name=f"cache-{cid}",
                      connected_at=now, last_refreshed_at=now, access_expires_at=None)


def test_orphaned_client_state_secrets_are_deleted_once_an_hour_old(rt, world):
    world.secrets._now = world.clock.now  # Key Vault stamps every secret with its creation time
    conn = connected(rt)
    live = rt.table.get(conn.id).secret_name
    world.secrets.set(f"{CLIENT_STATE_PREFIX}crashed", "a secret whose row never came", owner=ALICE.id)
    world.secrets.set(f"{CLIENT_STATE_PREFIX}before-owners", "written before owners were kept")
    reconciler = SecretReconciler(secrets_store=world.secrets, connections=world.connections, claims=world.claims,
                                  clock=world.clock, grace=timedelta(minutes=15), connection_pages=world.connections,
                                  subscriptions=rt.table)
    assert reconciler.run() == 0  # maybe a subscription being made
    world.clock.advance(3601)
    assert reconciler.run() == 2
    assert world.secrets.get(f"{CLIENT_STATE_PREFIX}crashed") is None
    assert world.secrets.get(f"{CLIENT_STATE_PREFIX}before-owners") is None
    assert world.secrets.get(live) is not None  # its subscription row names it


def test_disconnecting_deletes_the_subscription_its_secret_and_its_row(rt, world):
    conn = connected(rt)
    record = rt.table.get(conn.id)
    assert rt.accounts.disconnect(ALICE.id, conn.id)
    assert record.subscription_id in rt.graph.deleted and record.subscription_id not in rt.graph.live
    assert world.secrets.get(record.secret_name) is None and rt.table.get(conn.id) is None


def test_erasing_a_users_data_deletes_their_subscriptions_at_graph(rt, world):
    conn = connected(rt)
    record = rt.table.get(conn.id)
    world.services.erasure.erase(ALICE.id)
    assert record.subscription_id in rt.graph.deleted
    assert rt.table.get(conn.id) is None and world.secrets.get(record.secret_name) is None


# ------------------------------------------------------------------ notifications
def test_a_genuine_change_notification_queues_one_sync_of_its_connection(rt, world):
    conn = connected(rt)
    received = rt.notifications.receive(conn.id, body(change(rt, conn)))
    assert (received.accepted, received.refused, received.syncs_queued) == (1, {}, 1)
    assert world.jobs.syncs == [(SyncJob(ALICE.id, conn.id, NOTIFIED), timedelta(0))]


def test_a_burst_of_notifications_is_synced_once_and_a_change_during_the_sync_queues_the_next(rt, world):
    conn = connected(rt)
    for _ in range(20):
        rt.notifications.receive(conn.id, body(change(rt, conn), change(rt, conn)))
    assert len(world.jobs.syncs) == 1
    [(job, _)] = world.jobs.syncs
    world.jobs.syncs.clear()
    world.sync.sync(job)  # the sync starts: the next notification queues the next one
    rt.notifications.receive(conn.id, body(change(rt, conn)))
    assert len(world.jobs.syncs) == 1


@pytest.mark.parametrize("forgery", ["wrong_secret", "no_secret", "unknown_subscription", "unknown_connection"])
def test_forged_notifications_change_nothing_and_log_no_secret(rt, world, caplog, forgery):
    conn = connected(rt)
    item = change(rt, conn)
    genuine = item["clientState"]
    connection_id = conn.id
    if forgery == "wrong_secret":
        item["clientState"] = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    elif forgery == "no_secret":
        del item["clientState"]
    elif forgery == "unknown_subscription":
        item["subscriptionId"] = "someone-elses"
    else:
        connection_id = "nope"
    caplog.set_level(logging.DEBUG)
    received = rt.notifications.receive(connection_id, body(item))
    assert received.accepted == 0 and sum(received.refused.values()) == 1
    assert world.jobs.syncs == [] and world.states.queued == {} and rt.sub_jobs.jobs == []
    assert genuine not in caplog.text and "refused" in caplog.text


def test_client_states_are_compared_in_constant_time(rt, monkeypatch):
    conn = connected(rt)
    compared = []
    real = notifications_module.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(notifications_module.hmac, "compare_digest", spy)
    rt.notifications.receive(conn.id, body(change(rt, conn, client_state="guess")))
    assert len(compared) == 1


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"value": []}', b'{"value": "x"}', b'{"value": [1]}',
                                 b'{"other": []}'])
def test_bodies_that_are_not_notification_collections_are_refused_with_a_reason(rt, raw):
    with pytest.raises(MalformedNotification) as refused:
        rt.notifications.receive("any", raw)
    assert str(refused.value)


def test_the_validation_token_is_echoed_as_given(rt):
    token = "Validation: Testing client application reachability <script>"
    assert validation_echo(token) == token
    for bad in ("", "x" * 1025):
        with pytest.raises(MalformedNotification):
            validation_echo(bad)


def test_reauthorization_required_reauthorizes_and_removed_recreates(rt, world):
    conn = connected(rt)
    rt.notifications.receive(conn.id, body(change(rt, conn, lifecycleEvent="reauthorizationRequired")))
    rt.notifications.receive(conn.id, body(change(rt, conn, lifecycleEvent="subscriptionRemoved")))
    assert rt.sub_jobs.actions() == [REAUTHORIZE, RECREATE]
    assert world.jobs.syncs == []  # each job resyncs once its work at Graph is done


def test_a_challenge_is_answered_with_a_token_issued_after_it_then_the_calendar_is_read(rt, world):
    conn = connected(rt)
    record = rt.table.get(conn.id)
    refreshes = world.identity.refreshes
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, REAUTHORIZE)) == "renewed"
    assert world.identity.refreshes == refreshes + 1  # not MSAL's cached token: it may predate the challenge
    assert rt.graph.renewed == [record.subscription_id]
    # Graph held back the changes made during the pause for good: the calendar is read again.
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(conn.id, NOTIFIED)]


def test_a_missed_lifecycle_event_resyncs(rt, world):
    conn = connected(rt)
    received = rt.notifications.receive(conn.id, body(change(rt, conn, lifecycleEvent="missed")))
    assert received.lifecycle == {"missed": 1}
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(conn.id, NOTIFIED)]


def test_a_sync_that_could_not_be_queued_leaves_no_mark_so_graphs_retry_queues_it(rt, world):
    conn = connected(rt)

    def broken(job, delay=timedelta(0)):
        raise RuntimeError("queue unavailable")

    world.jobs.enqueue_sync = broken
    with pytest.raises(RuntimeError):
        rt.notifications.receive(conn.id, body(change(rt, conn)))
    assert world.states.queued == {}


def test_notifications_of_a_recreated_subscription_are_refused_for_the_old_one(rt, world):
    conn = connected(rt)
    old = change(rt, conn)
    rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, RECREATE))
    world.jobs.syncs.clear()
    world.states.clear_queued(conn.id)
    assert rt.notifications.receive(conn.id, body(old)).refused == {"unknown_subscription": 1}
    assert rt.notifications.receive(conn.id, body(change(rt, conn))).syncs_queued == 1


def test_client_state_secrets_are_read_from_the_vault_once_per_process(rt, world):
    conn = connected(rt)
    items = [change(rt, conn) for _ in range(5)]

    class Counting:
        reads = 0

        def get(self, name):
            Counting.reads += 1
            return world.secrets.get(name)

    notifications = NotificationService(subscriptions=rt.table, client_states=ClientStates(Counting()),
                                        syncs=SyncRequests(sync_state=world.states, jobs=world.jobs, clock=world.clock),
                                        jobs=rt.sub_jobs)
    for item in items:
        assert notifications.receive(conn.id, body(item)).accepted == 1
    assert Counting.reads == 1


def test_a_notification_body_that_reaches_a_log_line_shows_no_client_state(rt):
    from shared.redaction import scrub

    conn = connected(rt)
    item = change(rt, conn)
    assert item["clientState"] not in scrub(json.dumps({"value": [item]}))


def test_a_subscription_made_while_its_connection_was_disconnected_is_deleted_again(rt, world):
    world.identity.next_account = WORK
    url = rt.connect.start(ALICE, None)
    conn = rt.connect.claim(ALICE, rt.connect.complete({"code": "c", "state": url.split("state=")[1]}).claim).connection
    [(job, _)] = rt.sub_jobs.jobs
    real_create = rt.graph.create

    def create_then_disconnected(*args, **kwargs):
        made = real_create(*args, **kwargs)
        world.accounts.disconnect(ALICE.id, conn.id)  # the user disconnects while Graph answers
        return made

    rt.graph.create = create_then_disconnected
    assert rt.subscriptions.run(job) == "raced"
    assert rt.graph.live == {} and rt.table.rows == {}
    assert list(world.secrets.list(CLIENT_STATE_PREFIX)) == []


def test_upcoming_meetings_show_only_what_the_users_connections_still_hold(rt, world):
    from tests.unit.test_sync_and_deploy import event

    conn = connected(rt)
    world.calendar.add(event(world, "e1"))
    world.sync.sync(SyncJob(ALICE.id, conn.id))
    assert [m.title for m, _ in world.meeting_lifecycle.upcoming(ALICE.id)] == ["Meeting e1"]
    world.connections.remove(conn)  # gone, while a sync in flight still holds its meeting for a moment
    assert world.meeting_lifecycle.upcoming(ALICE.id) == []


def test_disconnecting_a_calendar_whose_grant_was_revoked_tells_the_user_only_that_it_was_disconnected(rt, world):
    from shared.ports import StatusEventType, TokenError

    conn = connected(rt)
    world.identity.refresh_errors[conn.home_account_id] = TokenError("invalid_grant", "AADSTS50173: revoked",
                                                                     (50173,))
    assert rt.accounts.disconnect(ALICE.id, conn.id)
    assert [e.type for e in world.events.published] == [StatusEventType.CONNECTION_DISCONNECTED]
    assert rt.table.get(conn.id) is None  # the subscription lapses at Graph; nothing of it is kept here


def test_a_job_that_read_a_connection_before_it_was_disconnected_tells_the_user_nothing(rt, world):
    from shared.ports import Conflict

    conn = connected(rt)
    stale = world.connections.get(ALICE.id, conn.id)
    rt.accounts.disconnect(ALICE.id, conn.id)
    world.events.published.clear()
    with pytest.raises(Conflict):
        world.tokens.access_token(stale)
    assert world.events.published == []
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, SUBSCRIBE)) == "skipped"


def test_a_flood_of_forged_notifications_logs_one_line_and_forges_none(caplog):
    """Anyone can POST to the notification URL: 1,000 forged items are one log line, and a line break
    in an id cannot start a forged log line."""
    from shared.services.notifications import NotificationService

    class NoRows:
        def get(self, connection_id):
            return None

    service = NotificationService(subscriptions=NoRows(), client_states=None, syncs=None, jobs=None)  # type: ignore[arg-type]
    body = json.dumps({"value": [{"subscriptionId": "s\n2026-11-30 ERROR forged", "clientState": "x"}] * 1000})
    with caplog.at_level("INFO"):
        received = service.receive("abc\n2026-11-30 INFO forged", body.encode())
    assert received.accepted == 0 and sum(received.refused.values()) == 1000
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert all("\n" not in str(v) for r in caplog.records for v in vars(r).values() if isinstance(v, str))


def test_a_subscribe_job_that_races_a_token_write_on_another_instance_is_retried_not_dropped(rt, monkeypatch):
    w = rt.world
    w.identity.next_account = WORK
    url = rt.connect.start(ALICE, None)
    result = rt.connect.complete({"code": "c", "state": url.split("state=")[1]})
    conn = rt.connect.claim(ALICE, result.claim).connection
    [(job, _)] = rt.sub_jobs.jobs
    taken = rt.world.tokens.access_token
    raced = []

    def a_sync_renewed_the_token_meanwhile(c, **kw):
        if not raced:
            raced.append(True)
            raise Conflict(c.id)
        return taken(c, **kw)

    monkeypatch.setattr(rt.world.tokens, "access_token", a_sync_renewed_the_token_meanwhile)
    with pytest.raises(Conflict):
        rt.subscriptions.run(job)  # the queue delivers it again
    assert rt.subscriptions.run(job) == "created"
    assert rt.table.get(conn.id) is not None


# ------------------------------------------------------------------ verified, not assumed
def test_the_scan_finds_a_subscription_graph_removed_without_a_word_and_makes_a_new_one(rt, world, caplog):
    conn = connected(rt)
    old = rt.table.get(conn.id)
    rt.graph.remove_behind_our_back(old.subscription_id)  # no subscriptionRemoved ever came
    with caplog.at_level(logging.WARNING):
        assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, VERIFY)) == "recreated"
    assert rt.table.get(conn.id).subscription_id != old.subscription_id
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(conn.id, NOTIFIED)]  # what it missed
    assert any(getattr(r, "event", None) == "subscription_missing" for r in caplog.records)


def test_the_scan_leaves_a_live_authorized_subscription_alone_with_one_graph_call(rt, world):
    conn = connected(rt)
    listed, refreshes = rt.graph.listed, world.identity.refreshes
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, VERIFY)) == "verified"
    assert rt.graph.listed == listed + 1 and rt.graph.renewed == [] and world.identity.refreshes == refreshes
    assert world.jobs.syncs == []


def test_a_second_subscription_left_by_a_retried_create_is_deleted(rt, world):
    conn = connected(rt)
    kept = rt.table.get(conn.id).subscription_id
    # A POST /subscriptions that timed out at our end but succeeded at Graph, then was sent again.
    stray = rt.graph.create("at", notification_url=f"{URL}?connection={conn.id}",
                            lifecycle_url=f"{URL}/lifecycle?connection={conn.id}", client_state="x" * 64,
                            expires_at=world.clock.now() + timedelta(days=1))
    other = rt.graph.create("at", notification_url=f"{URL}?connection=someone-else", lifecycle_url="l",
                            client_state="y" * 64, expires_at=world.clock.now() + timedelta(days=1))
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, VERIFY)) == "verified"
    assert stray.id in rt.graph.deleted and kept not in rt.graph.deleted and other.id not in rt.graph.deleted


def test_a_create_deletes_the_duplicate_its_own_retried_post_left(rt, world):
    world.identity.next_account = WORK
    url = rt.connect.start(ALICE, None)
    conn = rt.connect.claim(ALICE, rt.connect.complete({"code": "c", "state": url.split("state=")[1]}).claim).connection
    [(job, _)] = rt.sub_jobs.jobs
    stray = rt.graph.create("at", notification_url=f"{URL}?connection={conn.id}",
                            lifecycle_url=f"{URL}/lifecycle?connection={conn.id}", client_state="x" * 64,
                            expires_at=world.clock.now() + timedelta(days=1))
    assert rt.subscriptions.run(job) == "created"
    assert list(rt.graph.live) == [rt.table.get(conn.id).subscription_id] and stray.id in rt.graph.deleted


def test_a_subscription_near_the_end_of_its_authorizing_token_is_reauthorized_ahead_and_the_calendar_read(
        rt, world):
    """Personal accounts are never challenged: their notifications pause without a word."""
    conn = connected(rt)
    record = rt.table.get(conn.id)
    world.clock.advance(3600 - 10 * 60)  # the access token that authorized it has 10 minutes left
    refreshes = world.identity.refreshes
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, VERIFY)) == "reauthorized"
    assert world.identity.refreshes == refreshes + 1 and rt.graph.renewed == [record.subscription_id]
    assert rt.table.get(conn.id).authorized_until == world.clock.now() + timedelta(hours=1)
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(conn.id, NOTIFIED)]


def test_every_authorization_plans_the_next_so_a_never_challenged_account_never_pauses(rt, world):
    """Personal accounts get no reauthorizationRequired: without a plan their notifications pause
    near the end of every authorizing token until the next scan (6 hours at the defaults)."""
    conn = connected(rt)
    record = rt.table.get(conn.id)
    planned = SubscriptionJob(ALICE.id, conn.id, REAUTHORIZE, authorized_until=record.authorized_until)
    world.clock.advance(45 * 60)
    refreshes = world.identity.refreshes
    assert rt.subscriptions.run(planned) == "renewed"
    assert world.identity.refreshes == refreshes + 1 and rt.graph.renewed == [record.subscription_id]
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(conn.id, NOTIFIED)]  # what a pause lost
    [(following, delay)] = rt.sub_jobs.jobs
    assert following.authorized_until == rt.table.get(conn.id).authorized_until and delay == timedelta(minutes=45)
    # The same planned job delivered again (at-least-once) is superseded: no second chain, no token.
    rt.sub_jobs.jobs.clear()
    assert rt.subscriptions.run(planned) == "superseded"
    assert world.identity.refreshes == refreshes + 1 and rt.sub_jobs.jobs == []


def test_a_short_lived_token_plans_its_reauthorization_at_half_its_life_never_at_once(rt, world):
    conn = connected(rt)
    world.identity.lifetime = timedelta(minutes=5)
    rt.sub_jobs.jobs.clear()
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, REAUTHORIZE)) == "renewed"
    [(_, delay)] = rt.sub_jobs.jobs
    assert delay == timedelta(minutes=2, seconds=30)


def test_a_renewal_page_paces_its_jobs_after_the_pages_before_it_and_skips_a_row_it_cannot_read(rt, world):
    conns = [world.connections.add(fakes_connection(f"p{n}", world), Plan.BUSINESS) for n in range(3)]
    original = rt.table.get

    def unreadable(connection_id: str):
        if connection_id == conns[1].id:
            raise ValueError("missing timestamp in stored row")
        return original(connection_id)

    rt.table.get = unreadable
    assert rt.subscriptions.renew_page(conns, enqueued_before=40) == 2  # the walk goes on past the bad row
    assert [(j.connection_id, d) for j, d in rt.sub_jobs.jobs] == [
        (conns[0].id, timedelta(seconds=40 / 20)), (conns[2].id, timedelta(seconds=41 / 20))]


def test_a_planned_reauthorization_that_meets_an_outage_tries_again_and_the_chain_goes_on(rt, world):
    """Microsoft's token endpoint failing for a while must not end the plan (nothing else would plan
    the next reauthorization of a never-challenged account)."""
    from shared.ports import TokenError

    conn = connected(rt)
    record = rt.table.get(conn.id)
    planned = SubscriptionJob(ALICE.id, conn.id, REAUTHORIZE, authorized_until=record.authorized_until)
    world.clock.advance(45 * 60)
    world.identity.refresh_errors[conn.home_account_id] = TokenError("unreachable", "HTTP 503")
    assert rt.subscriptions.run(planned) == "no_token"
    assert world.connections.get(ALICE.id, conn.id).is_active
    assert rt.sub_jobs.jobs == [(planned, timedelta(minutes=5))]  # the same plan, a little later
    rt.sub_jobs.jobs.clear()
    del world.identity.refresh_errors[conn.home_account_id]
    world.clock.advance(5 * 60)
    assert rt.subscriptions.run(planned) == "renewed"
    [(following, _)] = rt.sub_jobs.jobs
    assert following.authorized_until == rt.table.get(conn.id).authorized_until > record.authorized_until


def test_a_token_with_little_life_left_is_reauthorized_well_before_graph_would_challenge(rt, world):
    """Graph challenges (and pauses) 10 minutes before the authorizing token ends: a token with 20
    minutes left is reauthorized with 15 left, not at half its life (10 left)."""
    conn = connected(rt)
    world.identity.lifetime = timedelta(minutes=20)
    rt.sub_jobs.jobs.clear()
    assert rt.subscriptions.run(SubscriptionJob(ALICE.id, conn.id, REAUTHORIZE)) == "renewed"
    [(_, delay)] = rt.sub_jobs.jobs
    assert delay == timedelta(minutes=5)
