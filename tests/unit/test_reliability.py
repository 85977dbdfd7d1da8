"""Auto-join never fails silently (domain level): mailboxes Graph cannot read, one bad event, deleted
occurrences without `@removed`, syncs that keep failing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.connections import REASONS, UNTOLD, ConnectionStatus, refresh_due
from shared.ports import Conflict, DeployResult, RefreshJob, RowTooLarge, SyncJob, TokenError
from shared.services.sync import MAX_TITLE_CHARS
from tests.unit.conftest import LEAD
from tests.unit.test_sync_and_deploy import ALICE, WORK, _series, connected, event, sync, upcoming


def test_an_account_whose_mailbox_graph_cannot_read_connects_in_error_naming_the_admin(world):
    world.calendar.mailbox_unavailable = "MailboxNotEnabledForRESTAPI"
    claimed = world.connect_account(ALICE, WORK)
    c = claimed.connection
    assert (c.status, c.reason_code, c.reason.action.value) == (
        ConnectionStatus.ERROR, "calendar_unavailable", "contact_admin")
    assert "admin" in c.reason.message
    assert world.jobs.syncs == []  # nothing to sync: no empty "Active" list
    world.calendar.mailbox_unavailable = None  # the admin moved the mailbox online: reconnect restores
    again = world.connect_account(ALICE, WORK, reconnect=c.id).connection
    assert again.status is ConnectionStatus.ACTIVE and again.reason_code is None


def test_a_mailbox_that_becomes_unreadable_turns_error_and_the_user_is_told_what_is_at_risk(world):
    conn = connected(world)
    world.calendar.add(event(world, "soon", minutes_from_now=90))
    world.calendar.add(event(world, "later", minutes_from_now=60 * 30))
    sync(world, conn)
    world.calendar.mailbox_unavailable = "MailboxNotEnabledForRESTAPI"
    assert sync(world, conn).outcome == "calendar_unavailable"
    [c] = world.accounts.list(ALICE.id)
    assert (c.status, c.reason_code) == (ConnectionStatus.ERROR, "calendar_unavailable")
    [told] = world.events.published
    assert told.type.value == "com.coagentor.outlook.connection.error"
    assert told.data == {"connection_id": conn.id, "email": "alice@contoso.com", "reason_code": "calendar_unavailable",
                         "action": "contact_admin", "meetings_at_risk": 1}
    assert world.states.get(conn.id).lease_owner == ""  # the connection is not left locked
    sync(world, conn)  # an Error connection is not synced, and nobody is told twice
    assert len(world.events.published) == 1


def test_one_bad_event_never_stops_a_calendar(world, monkeypatch):
    conn = connected(world)
    world.calendar.page_size = 10
    world.calendar.add(event(world, "before"))
    world.calendar.add(event(world, "year-one", start={"dateTime": "0001-01-01T00:00:00", "timeZone": "UTC"}))
    world.calendar.add(event(world, "poison", subject="Poison"))
    world.calendar.add(event(world, "long", subject="x" * 100_000))
    world.calendar.add(event(world, "after"))
    create = world.meetings.create

    def refuse_poison(meeting):
        if meeting.title == "Poison":
            raise RowTooLarge("PropertyValueTooLarge")  # what the table adapter raises for such a row
        return create(meeting)

    monkeypatch.setattr(world.meetings, "create", refuse_poison)
    report = sync(world, conn)
    assert report.outcome == "synced" and report.skipped == 2  # the poison one and the year-one one
    titles = [m.title for m in upcoming(world)]
    assert "Meeting before" in titles and "Meeting after" in titles and "Poison" not in titles
    assert max(len(t) for t in titles) == MAX_TITLE_CHARS
    assert world.states.get(conn.id).delta_link is not None  # the round completed


def test_a_deleted_occurrence_without_removed_loses_its_meeting_and_agent(world):
    conn = connected(world)
    world.calendar.page_size = 10
    master, occurrences = _series(world, "s1", minutes_from_now=60, days=3)
    for e in (master, *occurrences):
        world.calendar.add(e)
    sync(world, conn)
    assert len(upcoming(world)) == 3
    world.calendar.delete_occurrence("s1-occ1")  # Graph: only the master comes back changed
    sync(world, conn)
    starts = [m.start for m in upcoming(world)]
    first = world.clock.now() + timedelta(minutes=60)
    assert starts == [first, first + timedelta(days=2)]
    assert "instances:s1" in world.calendar.calls


def test_right_before_deployment_the_meetings_own_event_is_confirmed(world):
    """Even when no delta round says anything, a deleted occurrence gets no agent."""
    conn = connected(world)
    world.calendar.page_size = 10
    master, occurrences = _series(world, "s2", minutes_from_now=1, days=2)
    for e in (master, *occurrences):
        world.calendar.add(e)
    sync(world, conn)
    world.calendar.events.pop("s2-occ0")  # gone, and nothing in the next delta round
    deploys = [j for j, _ in world.jobs.deploys if j.deploy_at <= world.clock.now() + timedelta(minutes=1)]
    assert [world.deploy.deploy(j, freshen=world.sync.freshen) for j in deploys] == ["meeting_gone"]
    assert world.agents.calls == []


def test_sparse_occurrences_with_extra_null_keys_still_take_the_masters_link(world):
    conn = connected(world)
    sync(world, conn)
    master, occurrences = _series(world, "s3", days=1)
    world.calendar.events[master["id"]] = master
    world.calendar.add({**occurrences[0], "subject": None, "onlineMeeting": None, "body": None})
    sync(world, conn)
    [meeting] = upcoming(world)
    assert meeting.join_url == master["onlineMeeting"]["joinUrl"] and meeting.title == "Meeting s3"


def test_a_sync_that_keeps_failing_shows_a_warning_until_one_succeeds(world):
    conn = connected(world)
    sync(world, conn)
    real = world.calendar.delta_next

    def broken(token, link):
        raise RuntimeError("Graph answered 500 for an hour")

    world.calendar.delta_next = broken
    with pytest.raises(RuntimeError):
        world.sync.sync(SyncJob(ALICE.id, conn.id))
    [c] = world.accounts.list(ALICE.id)
    assert c.is_active and c.warning(world.clock.now(), 21600, sync_after_seconds=1800) is None
    world.clock.advance(1800)
    with pytest.raises(RuntimeError):
        world.sync.sync(SyncJob(ALICE.id, conn.id))
    [c] = world.accounts.list(ALICE.id)
    assert "could not be read" in c.warning(world.clock.now(), 21600, sync_after_seconds=1800)
    world.calendar.delta_next = real
    sync(world, conn)
    [c] = world.accounts.list(ALICE.id)
    assert c.warning(world.clock.now(), 21600, sync_after_seconds=1800) is None


def test_a_lost_deploy_message_is_queued_again_while_the_meeting_can_still_be_joined(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=5))
    sync(world, conn)
    world.jobs.deploys.clear()  # the message is lost (or ended in the poison queue)
    world.clock.advance(60 * 5 - LEAD + 150)  # deploy time + 2.5 min: the meeting started 30 s ago
    assert world.deploy.recover_overdue(ALICE.id) == 1
    [(job, delay)] = world.jobs.deploys
    assert delay == timedelta(0)
    assert world.deploy.deploy(job) == "deployed"
    assert world.deploy.recover_overdue(ALICE.id) == 0  # a verdict: nothing more to do


def test_a_meeting_that_started_without_a_verdict_shows_failed_and_the_user_is_told(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=5, subject="Board review"))
    sync(world, conn)
    world.jobs.deploys.clear()
    world.clock.advance(60 * 5 + 301)  # past the start and the grace
    assert world.deploy.recover_overdue(ALICE.id) == 1
    [meeting] = upcoming(world)
    assert (meeting.agent.value, meeting.failure_reason) == ("failed", "missed")
    [told] = world.events.published
    assert told.type.value == "com.coagentor.outlook.agent.failed"
    assert (told.data["meeting_id"], told.data["title"], told.data["reason"]) == (meeting.key, "Board review", "missed")
    assert world.jobs.deploys == [] and world.agents.calls == []


def test_disconnecting_tells_the_platform(world):
    conn = connected(world)
    assert world.accounts.disconnect(ALICE.id, conn.id)
    [told] = world.events.published
    assert told.type.value == "com.coagentor.outlook.connection.disconnected"
    assert told.data == {"connection_id": conn.id, "email": "alice@contoso.com"}


def test_reconnecting_a_connection_in_error_tells_the_platform_it_is_restored(world):
    conn = connected(world)
    world.calendar.mailbox_unavailable = "MailboxNotEnabledForRESTAPI"
    sync(world, conn)
    world.calendar.mailbox_unavailable = None
    world.connect_account(ALICE, WORK, reconnect=conn.id)
    assert [e.type.value.rsplit(".", 1)[1] for e in world.events.published] == ["error", "restored"]
    assert len({e.id for e in world.events.published}) == 2


def test_a_meeting_found_after_its_deploy_time_is_not_overdue_at_once(world):
    """Its message was queued just now (deploy at once): only silence after that counts as lost."""
    conn = connected(world)
    world.calendar.add(event(world, "late", minutes_from_now=1))  # deploy time (start - lead) has passed
    sync(world, conn)
    assert len(world.jobs.deploys) == 1
    world.clock.advance(60)
    assert world.deploy.recover_overdue(ALICE.id) == 0
    world.clock.advance(61)
    assert world.deploy.recover_overdue(ALICE.id) == 1  # still no verdict two minutes after queueing
    assert world.deploy.recover_overdue(ALICE.id) == 0  # and queued again only once per two minutes


def test_what_a_sync_stores_always_fits_table_storage(world):
    """The fake refuses what Table Storage refuses (64 KiB per string property, 1 MiB per entity):
    absurd titles, links, bodies and many calendars still sync into rows that fit."""
    from tests.fakes import EntityTooLarge, check_table_entity

    with pytest.raises(EntityTooLarge):
        check_table_entity({"PartitionKey": "u", "RowKey": "k", "Title": "é" * 40_000})
    conn = connected(world)
    world.calendar.page_size = 10
    huge_pwd = "%C3%A9" * 6000
    world.calendar.add(event(world, "e1", subject="T" * 200_000,
                             onlineMeeting={"joinUrl": f"https://zoom.us/j/123456789?pwd={huge_pwd}"},
                             body={"contentType": "text", "content": "x" * 900_000}))
    world.calendar.add(event(world, "e2", subject="日本語" * 30_000))
    long_pwd = "abcDEF123" * 200  # a 1,800-character passcode: within the link bound, stored whole
    world.calendar.add(event(world, "e3", onlineMeeting={"joinUrl": f"https://zoom.us/j/987654321?pwd={long_pwd}"}))
    report = sync(world, conn)
    assert report.skipped == 0 and report.upserted == 2  # e1: its only link is absurd (over 2,048 chars): no meeting
    stored = upcoming(world)
    assert any(long_pwd in m.join_url for m in stored)
    for meeting in stored:
        assert len(meeting.title) <= MAX_TITLE_CHARS


def test_a_calendar_graph_keeps_throttling_shows_a_warning_if_it_lasts(world):
    conn = connected(world)
    sync(world, conn)
    world.calendar.throttle_next = 2
    assert sync(world, conn).outcome == "throttled"
    world.clock.advance(1800)
    assert sync(world, conn).outcome == "throttled"
    [c] = world.accounts.list(ALICE.id)
    assert "could not be read" in c.warning(world.clock.now(), 21600, sync_after_seconds=1800)
    assert sync(world, conn).outcome == "synced"
    [c] = world.accounts.list(ALICE.id)
    assert c.warning(world.clock.now(), 21600, sync_after_seconds=1800) is None


def test_a_storage_failure_ends_the_round_without_losing_the_change(world, monkeypatch):
    """Not the event's fault: the delta link does not move past a change that was not stored, so the
    next sync stores it."""
    conn = connected(world)
    sync(world, conn)
    world.calendar.add(event(world, "during-outage", minutes_from_now=90))
    create = world.meetings.create

    def storage_down(meeting):
        raise ConnectionError("Table Storage did not answer")

    monkeypatch.setattr(world.meetings, "create", storage_down)
    with pytest.raises(ConnectionError):
        world.sync.sync(SyncJob(ALICE.id, conn.id))
    assert world.states.get(conn.id).lease_owner == ""  # the lease is let go at once
    monkeypatch.setattr(world.meetings, "create", create)
    assert sync(world, conn).outcome == "synced"
    assert [m.title for m in upcoming(world)] == ["Meeting during-outage"]


def test_a_conflict_while_taking_the_token_frees_the_lease(world, monkeypatch):
    conn = connected(world)

    def raced(*args, **kwargs):
        raise Conflict(conn.id)

    monkeypatch.setattr(world.tokens, "access_token", raced)
    assert world.sync.sync(SyncJob(ALICE.id, conn.id)).outcome == "raced"
    assert world.states.get(conn.id).lease_owner == ""


def test_graph_refusing_the_token_classifies_the_grant_at_once(world):
    conn = connected(world)
    sync(world, conn)
    world.calendar.refuse_token = True
    silent = world.identity.acquire

    def revoked_on_redemption(cache, home_account_id, *, force_refresh):
        if force_refresh:  # the cached access token still serves silent calls; the grant is gone
            return TokenError("invalid_grant", "", (50173,), "bad_token")
        return silent(cache, home_account_id, force_refresh=False)

    world.identity.acquire = revoked_on_redemption
    assert sync(world, conn).outcome == "graph_unauthorized"
    [c] = world.accounts.list(ALICE.id)
    assert (c.status.value, c.reason_code) == ("error", "access_revoked")
    assert [e.type.value for e in world.events.published] == ["com.coagentor.outlook.connection.error"]


def test_an_agent_api_retry_backing_off_is_not_taken_for_a_lost_message(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=2))
    sync(world, conn)
    world.agents.script = [DeployResult(ok=False, detail="HTTP 503")] * 6
    [(job, _)] = world.jobs.deploys
    world.jobs.deploys.clear()
    assert world.deploy.deploy(job) == "retrying"
    [(_, delay)] = world.jobs.deploys
    world.clock.advance(delay.total_seconds() + 110)  # past deploy time + 2 min, within the retry + 2 min
    assert world.deploy.recover_overdue(ALICE.id) == 0


def test_one_failure_retried_after_a_conflicting_write_tells_the_user_once(world, monkeypatch):
    """The Error write goes first: the one that lost to the conflicting write told nobody; the retry
    tells once."""
    conn = connected(world)
    update = world.connections.update
    calls = {"n": 0}

    def conflict_once(connection):
        calls["n"] += 1
        if calls["n"] == 1:
            update(world.connections.get(connection.user_id, connection.id))  # someone else wrote meanwhile
            raise Conflict(connection.id)
        return update(connection)

    monkeypatch.setattr(world.connections, "update", conflict_once)
    world.calendar.mailbox_unavailable = "MailboxNotEnabledForRESTAPI"
    sync(world, conn)
    assert len(world.events.published) == 1
    [c] = world.accounts.list(conn.user_id)
    assert c.reason_code == "calendar_unavailable" and c.failure_class is None


def test_no_connection_error_is_sent_for_an_error_write_that_lost_to_a_reconnect(world):
    conn = connected(world)
    # The refresh read the row; meanwhile the user reconnected (a new sign-in, a new token cache).
    world.connect_account(ALICE, WORK)
    with pytest.raises(Conflict):
        world.health.fail(conn, REASONS["access_revoked"])
    assert world.events.published == []
    [c] = world.accounts.list(ALICE.id)
    assert c.is_active and c.secret_name != conn.secret_name


def test_a_crash_between_the_error_write_and_its_event_is_finished_by_the_refresh_walk(world, monkeypatch):
    conn = connected(world)
    publish = world.events.publish
    monkeypatch.setattr(world.events, "publish", lambda event: (_ for _ in ()).throw(RuntimeError("crash")))
    world.identity.refresh_errors[WORK[0]] = TokenError("invalid_grant", "AADSTS50173: revoked", (50173,))
    with pytest.raises(RuntimeError):
        world.tokens.refresh_one(RefreshJob(ALICE.id, conn.id))
    monkeypatch.setattr(world.events, "publish", publish)
    [c] = world.accounts.list(ALICE.id)
    assert (c.status, c.failure_class) == (ConnectionStatus.ERROR, UNTOLD)  # in Error, the user not told yet
    assert refresh_due(c, world.clock.now(), 900, 43200)  # the refresh walk comes by for it
    assert world.tokens.refresh_one(RefreshJob(ALICE.id, conn.id)) == "told"
    [told] = world.events.published
    assert told.type.value == "com.coagentor.outlook.connection.error" and told.data["reason_code"] == "access_revoked"
    assert world.accounts.list(ALICE.id)[0].failure_class is None
    assert world.tokens.refresh_one(RefreshJob(ALICE.id, conn.id)) == "skipped"  # told once
    assert len(world.events.published) == 1


def test_a_refresh_that_races_a_disconnect_never_brings_the_token_cache_back(world, monkeypatch):
    conn = connected(world)
    acquire = world.identity.acquire

    def disconnect_meanwhile(cache, home_account_id, *, force_refresh):
        result = acquire(cache, home_account_id, force_refresh=force_refresh)
        world.accounts.disconnect(ALICE.id, conn.id)  # the user disconnects while Microsoft answers
        return result

    monkeypatch.setattr(world.identity, "acquire", disconnect_meanwhile)
    assert world.tokens.refresh_one(RefreshJob(ALICE.id, conn.id)) == "failed"
    assert world.secrets.get(conn.secret_name) is None


def test_the_card_says_when_the_calendar_was_last_read(world):
    conn = connected(world)
    assert world.accounts.last_synced_at(conn.id) is None
    sync(world, conn)
    assert world.accounts.last_synced_at(conn.id) == world.clock.now()
    world.clock.advance(300)
    world.calendar.throttle_next = 1
    sync(world, conn)  # not read through: the time stays that of the last complete read
    assert world.accounts.last_synced_at(conn.id) == world.clock.now() - timedelta(seconds=300)


def test_a_token_cache_missing_from_key_vault_asks_for_a_reconnect_and_tells_the_user(world):
    conn = connected(world)
    world.secrets.values.pop(conn.secret_name)
    assert world.tokens.refresh_one(RefreshJob(ALICE.id, conn.id)) == "failed"
    [c] = world.accounts.list(ALICE.id)
    assert (c.status.value, c.reason_code) == ("error", "refresh_failed")
    assert [e.data["reason_code"] for e in world.events.published] == ["refresh_failed"]


def test_a_notified_sync_that_meets_a_passing_failure_looks_again_soon(world):
    conn = connected(world)
    world.identity.refresh_errors[WORK[0]] = TokenError("server_error", "", (90033,))
    world.jobs.syncs.clear()

    def no_cached_token(cache, home_account_id, *, force_refresh):
        return world.identity.refresh_errors[WORK[0]]

    world.identity.acquire = no_cached_token
    report = world.sync.sync(SyncJob(ALICE.id, conn.id, reason="notified"))
    assert report.outcome == "no_token:transient"
    [(again, delay)] = world.jobs.syncs
    assert again.connection_id == conn.id and delay.total_seconds() == 30
