"""Timers and queues: refresh tokens, scan calendars, sync one calendar, deploy one agent."""

import logging

import azure.functions as func

from shared.adapters.queues import DEPLOY_QUEUE, REFRESH_QUEUE, SYNC_QUEUE, decode_deploy, decode_refresh, decode_sync
from shared.config import schedule
from shared.wiring import container

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("refresh_tokens")
@bp.timer_trigger(arg_name="timer", schedule=schedule("REFRESH_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def refresh_tokens(timer: func.TimerRequest) -> None:
    c = container()
    s = c.settings
    outcome = c.tokens.fan_out(c.jobs, next_run_in_seconds=s.token_refresh_ahead_seconds,
                               max_age_seconds=s.token_refresh_max_age_seconds,
                               rate_per_second=s.token_refresh_rate_per_second)
    purged = c.connect.purge_expired()
    log.info("refresh_tokens enqueued %d refreshes", outcome.enqueued,
             extra={"skipped": outcome.skipped, "purged_sign_ins": purged})


@bp.function_name("refresh_connection")
@bp.queue_trigger(arg_name="msg", queue_name=REFRESH_QUEUE, connection="AzureWebJobsStorage")
def refresh_connection(msg: func.QueueMessage) -> None:
    job = decode_refresh(msg.get_body().decode("utf-8"))
    outcome = container().tokens.refresh_one(job)
    log.info("refresh_connection %s", outcome, extra={"connection_id": job.connection_id})


@bp.function_name("scan_calendars")
@bp.timer_trigger(arg_name="timer", schedule=schedule("SCAN_SCHEDULE"), run_on_startup=False, use_monitor=True)
def scan_calendars(timer: func.TimerRequest) -> None:
    n = container().sync.fan_out()
    log.info("scan_calendars enqueued %d sync jobs", n)


@bp.function_name("sync_calendar")
@bp.queue_trigger(arg_name="msg", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def sync_calendar(msg: func.QueueMessage) -> None:
    job = decode_sync(msg.get_body().decode("utf-8"))
    report = container().sync.sync(job)
    log.info("sync_calendar %s", report.outcome, extra={"connection_id": job.connection_id})


@bp.function_name("deploy_agent")
@bp.queue_trigger(arg_name="msg", queue_name=DEPLOY_QUEUE, connection="AzureWebJobsStorage")
def deploy_agent(msg: func.QueueMessage) -> None:
    job = decode_deploy(msg.get_body().decode("utf-8"))
    c = container()
    verdict = c.deploy.deploy(job, freshen=c.sync.freshen)
    log.info("deploy_agent %s", verdict, extra={"meeting_id": job.meeting_key})
