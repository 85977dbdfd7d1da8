"""Queue `status-events`: deliver one status event to the CoAgentor platform (signed CloudEvent).

Services publish through `Container.status_events` (the outbox); this trigger makes one delivery
attempt per message. A retry is a new message with the same event id and a visibility delay, so this
function returns normally for it; it fails (and the host retries the message, then moves it to
`status-events-poison`) only when the message is unreadable or Storage refuses the next message."""

import logging

import azure.functions as func

from shared.adapters.platform_events import decode_delivery
from shared.adapters.queues import STATUS_EVENTS_QUEUE, ForgedMessage
from shared.wiring import container

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("deliver_status_event")
@bp.queue_trigger(arg_name="msg", queue_name=STATUS_EVENTS_QUEUE, connection="AzureWebJobsStorage")
def deliver_status_event(msg: func.QueueMessage) -> None:
    c = container()
    try:
        delivery = decode_delivery(c.signer.verify(msg.get_body().decode("utf-8")))
    except ForgedMessage as forged:
        log.error("status event message refused: %s", forged, extra={"event": "forged_queue_message",
                                                                     "queue": STATUS_EVENTS_QUEUE})
        return  # consumed, not retried: nothing is signed and sent on a forged message's word
    outcome = c.status_event_delivery.deliver(delivery)
    log.info("deliver_status_event %s", outcome,
             extra={"event_id": delivery.event.id, "event_type": delivery.event.type.value,
                    "attempt": delivery.attempt})
