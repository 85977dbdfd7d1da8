"""Graph change notifications and what they set off: the two public notification routes, the
subscription jobs, the renewal timer, and agent recalls.

- `POST /api/outlook/notifications` and `POST /api/outlook/notifications/lifecycle`: public (Graph
  calls them, with no bearer token). With `?validationToken=...` (the handshake when a subscription
  is created): 200 text/plain echoing the token. Otherwise a notification collection: 202 once the
  sync (or subscription job) is queued, well inside Graph's 3 seconds; 400 for a body that is not
  one; 503 when the queue or table cannot be reached (Graph retries).
- `manage_subscription` (queue `subscription-jobs`), `renew_subscriptions` (timer, RENEW_SCHEDULE),
  `recall_agent` (queue `agent-recalls`)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.adapters.queues import (
    RECALL_QUEUE,
    SUBSCRIPTION_QUEUE,
    ForgedMessage,
    decode_recall,
    decode_subscription_job,
)
from shared.config import schedule
from shared.services.fanout import RENEW
from shared.services.notifications import MalformedNotification, validation_echo
from shared.triggers.http import SECURITY_HEADERS, error
from shared.wiring import container

log = logging.getLogger(__name__)
bp = func.Blueprint()

_PLAIN_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


@bp.function_name("graph_notifications")
@bp.route(route="outlook/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Change notifications for the connection named in the query (`?connection=`)."""
    return _receive(req)


@bp.function_name("graph_lifecycle_notifications")
@bp.route(route="outlook/notifications/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_lifecycle_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed)."""
    return _receive(req)


def _receive(req: func.HttpRequest) -> func.HttpResponse:
    token = req.params.get("validationToken")
    if token is not None:
        try:
            echo = validation_echo(token)
        except MalformedNotification as exc:
            return error(400, "invalid_validation_token", str(exc))
        return func.HttpResponse(echo, status_code=200, mimetype="text/plain", charset="utf-8",
                                 headers=dict(_PLAIN_HEADERS))
    c = container()
    try:
        received = c.notifications.receive(req.params.get("connection"), req.get_body() or b"")
    except MalformedNotification as exc:
        log.warning("notification refused: %s", exc)
        return error(400, "invalid_notification", str(exc))
    except Exception:
        # Not persisted: a 5xx makes Graph deliver it again.
        log.exception("notification not queued")
        return error(503, "unavailable", "The notification could not be queued; deliver it again")
    log.info("notifications received", extra={"accepted": received.accepted, "refused": sum(received.refused.values()),
                                              "syncs_queued": received.syncs_queued})
    return func.HttpResponse(status_code=202, headers=dict(_PLAIN_HEADERS))


@bp.function_name("manage_subscription")
@bp.queue_trigger(arg_name="msg", queue_name=SUBSCRIPTION_QUEUE, connection="AzureWebJobsStorage")
def manage_subscription(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    job = decode_subscription_job(body)
    c = container()
    with c.telemetry.job("manage_subscription", body, connection_id=job.connection_id, user_id=job.user_id):
        outcome = c.subscriptions.run(job)
    log.info("manage_subscription %s: %s", job.action, outcome, extra={"connection_id": job.connection_id})


@bp.function_name("renew_subscriptions")
@bp.timer_trigger(arg_name="timer", schedule=schedule("RENEW_SCHEDULE"), run_on_startup=False, use_monitor=True)
def renew_subscriptions(timer: func.TimerRequest) -> None:
    c = container()
    with c.telemetry.job("renew_subscriptions"):
        c.fanout.start(RENEW)  # the walk goes on in fan_out_page, a page of connections per run
    log.info("renew_subscriptions started a renewal walk")


@bp.function_name("recall_agent")
@bp.queue_trigger(arg_name="msg", queue_name=RECALL_QUEUE, connection="AzureWebJobsStorage")
def recall_agent(msg: func.QueueMessage) -> None:
    c = container()
    try:
        body = c.signer.verify(msg.get_body().decode("utf-8"))
    except ForgedMessage as forged:
        log.error("recall message refused: %s", forged, extra={"event": "forged_queue_message",
                                                               "queue": RECALL_QUEUE})
        return  # consumed, not retried: no agent is deleted on a forged message's word
    job = decode_recall(body)
    with c.telemetry.job("recall_agent", body, meeting_id=job.meeting_key, user_id=job.user_id):
        outcome = c.recalls.recall(job, decide=c.meeting_lifecycle.decide)
    log.info("recall_agent %s", outcome, extra={"meeting_id": job.meeting_key})
