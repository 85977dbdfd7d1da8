"""Agent progress from the agent platform, and the delayed looks that follow it
(../shared/API.md "Agent progress"; docs/agent-progress.md).

- `POST /api/agents/status` (function `agent_status`): called by the agent platform, Standard
  Webhooks signature, no bearer. 204 when taken, also for a repeated `webhook-id` (nothing happens
  again); 401 bad, missing or stale signature; 400 malformed body; 404 unknown agent; 413 body too
  large; 503 when storage cannot be reached (the platform retries).
- `follow_agent` (queue `agent-progress`): lobby nudges and readiness checks, each a delayed message
  (at least once, any instance: shared/services/agent_progress.py)."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.adapters.agent_status import SignatureRejected
from shared.adapters.queues import PROGRESS_QUEUE, decode_progress
from shared.services.agent_progress import NUDGE, MalformedStatus, Taken, parse_status
from shared.triggers.http import MAX_BODY_BYTES, SECURITY_HEADERS, error, json_depth
from shared.wiring import container

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("agent_status")
@bp.route(route="agents/status", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def agent_status(req: func.HttpRequest) -> func.HttpResponse:
    """One status of one agent's try, signed by the agent platform."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        return error(413, "body_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes")
    c = container()
    try:
        webhook_id = c.agent_status_signatures.verify(raw, dict(req.headers.items()))
    except SignatureRejected as exc:
        log.warning("agent status refused: %s", exc)
        return error(401, "invalid_signature", str(exc))
    try:
        if c.agent_tries.webhook_seen(webhook_id):
            return _taken()  # a replay: taken before, nothing happens again
        try:
            if json_depth(raw) > 4:
                raise MalformedStatus("The body is nested too deeply")
            report = parse_status(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            message = str(exc) if isinstance(exc, MalformedStatus) else "The body is not JSON"
            return error(400, "invalid_status", message)
        taken = c.agent_progress.take(report)
        if taken is Taken.UNKNOWN_AGENT:
            return error(404, "unknown_agent", "No agent of this service has that agent_id or idempotency_key")
        c.agent_tries.remember_webhook(webhook_id, c.clock.now())
    except Exception:
        log.exception("agent status not taken")
        return error(503, "unavailable", "The status could not be stored; send it again")
    log.info("agent status %s: %s", report.status.value, taken.value)
    return _taken()


def _taken() -> func.HttpResponse:
    return func.HttpResponse(status_code=204, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@bp.function_name("follow_agent")
@bp.queue_trigger(arg_name="msg", queue_name=PROGRESS_QUEUE, connection="AzureWebJobsStorage")
def follow_agent(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    job = decode_progress(body)
    c = container()
    with c.telemetry.job("follow_agent", body, meeting_id=job.meeting_key, user_id=job.user_id):
        progress = c.agent_progress
        outcome = progress.nudge(job) if job.kind == NUDGE else progress.check_readiness(job)
    log.info("follow_agent %s: %s", job.kind, outcome, extra={"meeting_id": job.meeting_key})
