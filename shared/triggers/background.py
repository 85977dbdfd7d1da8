"""Timers and queues: refresh tokens, scan calendars (both walk the connections a page at a time),
sync one calendar, deploy one agent, watch the queues."""

import logging

import azure.functions as func

from shared.adapters.queues import (
    DEPLOY_QUEUE,
    FANOUT_QUEUE,
    REFRESH_QUEUE,
    SYNC_QUEUE,
    decode_deploy,
    decode_fanout,
    decode_refresh,
    decode_sync,
)
from shared.config import schedule
from shared.services.fanout import PURGE_CLAIMS, PURGE_FLOWS, REFRESH, SECONDARY, SYNC
from shared.wiring import container

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("refresh_tokens")
@bp.timer_trigger(arg_name="timer", schedule=schedule("REFRESH_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def refresh_tokens(timer: func.TimerRequest) -> None:
    c = container()
    with c.telemetry.job("refresh_tokens"):
        c.fanout.start(REFRESH)  # the walk over the connections goes on in fan_out_page, a page per run
        # Abandoned sign-ins, then unclaimed ones with their token caches: a page each here (usually the
        # only one: they live ten minutes), any further page as a fan_out_page message.
        flows = c.fanout.begin(PURGE_FLOWS)
        claims = c.fanout.begin(PURGE_CLAIMS)
    log.info("refresh_tokens started a refresh walk", extra={"purged_sign_ins": flows.enqueued + claims.enqueued})


@bp.function_name("refresh_connection")
@bp.queue_trigger(arg_name="msg", queue_name=REFRESH_QUEUE, connection="AzureWebJobsStorage")
def refresh_connection(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    job = decode_refresh(body)
    c = container()
    with c.telemetry.job("refresh_connection", body, connection_id=job.connection_id, user_id=job.user_id):
        outcome = c.tokens.refresh_one(job)  # counted by kind and class where tokens are acquired
    log.info("refresh_connection %s", outcome, extra={"connection_id": job.connection_id})


@bp.function_name("scan_calendars")
@bp.timer_trigger(arg_name="timer", schedule=schedule("SCAN_SCHEDULE"), run_on_startup=False, use_monitor=True)
def scan_calendars(timer: func.TimerRequest) -> None:
    c = container()
    with c.telemetry.job("scan_calendars"):
        c.fanout.start(SYNC)  # the walk over the connections goes on in fan_out_page, a page per run
    log.info("scan_calendars started a sync walk")


@bp.function_name("fan_out_page")
@bp.queue_trigger(arg_name="msg", queue_name=FANOUT_QUEUE, connection="AzureWebJobsStorage")
def fan_out_page(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    page = decode_fanout(body)
    c = container()
    with c.telemetry.job("fan_out_page", body, fanout_kind=page.kind):
        outcome = c.fanout.page(page)
        c.telemetry.fanned_out(page.kind, outcome.enqueued)
    log.info("fan_out_page %s #%d: %d jobs for %d connections", page.kind, page.number, outcome.enqueued,
             outcome.connections, extra={"fanout_page": page.number, "deferred": outcome.deferred,
                                         "last_page": outcome.last})


# Not a setting: the alerts on these gauges look at 15-minute windows, so nothing needs to tune it.
@bp.function_name("watch_queues")
@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False, use_monitor=True)
def watch_queues(timer: func.TimerRequest) -> None:
    """Messages waiting in every queue and its `-poison` queue, as a gauge operators alert on."""
    c = container()
    counts = c.queue_depths.counts()
    for name, messages in counts.items():
        c.telemetry.queue_depth(name, messages)
    poisoned = {name: n for name, n in counts.items() if name.endswith("-poison") and n}
    if poisoned:
        log.warning("messages in poison queues: %s", ", ".join(f"{k}={v}" for k, v in sorted(poisoned.items())))


@bp.function_name("sync_calendar")
@bp.queue_trigger(arg_name="msg", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def sync_calendar(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    job = decode_sync(body)
    c = container()
    with c.telemetry.job("sync_calendar", body, connection_id=job.connection_id, user_id=job.user_id):
        try:
            report = c.sync.sync(job)
        except Exception:
            c.telemetry.sync("error")
            raise
        c.telemetry.sync(report.outcome)
        # No deployment is lost: meetings whose deploy time passed without a verdict are handled now.
        c.deploy.recover_overdue(job.user_id)
    log.info("sync_calendar %s", report.outcome, extra={"connection_id": job.connection_id})


@bp.function_name("read_secondary_calendars")
@bp.timer_trigger(arg_name="timer", schedule=schedule("SECONDARY_CALENDARS_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def read_secondary_calendars(timer: func.TimerRequest) -> None:
    """Connections that read calendars besides their default one synced (Graph notifies the default
    calendar only): the walk over the connections goes on in fan_out_page, a page per run."""
    c = container()
    with c.telemetry.job("read_secondary_calendars"):
        c.fanout.start(SECONDARY)
    log.info("read_secondary_calendars started a walk")


@bp.function_name("watch_deployments")
@bp.timer_trigger(arg_name="timer", schedule=schedule("WATCHDOG_SCHEDULE"), run_on_startup=False, use_monitor=True)
def watch_deployments(timer: func.TimerRequest) -> None:
    """The deployment watchdog: overdue deployments of every user queued again (DeployService.watch)."""
    c = container()
    with c.telemetry.job("watch_deployments"):
        report = c.deploy.watch()
    log.info("watch_deployments looked at %d, queued again %d", report.looked, report.requeued,
             extra={"looked": report.looked, "requeued": report.requeued})


@bp.function_name("deploy_agent")
@bp.queue_trigger(arg_name="msg", queue_name=DEPLOY_QUEUE, connection="AzureWebJobsStorage")
def deploy_agent(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    job = decode_deploy(body)
    c = container()
    with c.telemetry.job("deploy_agent", body, meeting_id=job.meeting_key, user_id=job.user_id):
        try:
            verdict = c.deploy.deploy(job, freshen=c.sync.freshen)
        except Exception:
            c.telemetry.deployment("error")
            raise
        c.telemetry.deployment(verdict, lateness=c.clock.now() - job.deploy_at)
    log.info("deploy_agent %s", verdict, extra={"meeting_id": job.meeting_key})
