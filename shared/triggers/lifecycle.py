"""The user's data, end to end: erase it on request, delete token caches nothing names, prune what
is long past (shared/services/lifecycle.py)."""

import logging

import azure.functions as func

from shared.adapters.queues import ERASURE_QUEUE, ForgedMessage, decode_erasure
from shared.config import schedule
from shared.platform_auth import User
from shared.services.connect import TOKEN_CACHE_PREFIX
from shared.services.fanout import (
    ADOPT,
    INDEX_AWAITING,
    PRUNE,
    PRUNE_MEETINGS,
    PRUNE_ORPHANS,
    PRUNE_TRIES,
    PRUNE_WORKSPACE_MEETINGS,
    SWEEP,
)
from shared.services.subscriptions import CLIENT_STATE_PREFIX
from shared.triggers.http import authed, json_response
from shared.wiring import Container, container

log = logging.getLogger(__name__)
LEGACY_PREFIXES = (TOKEN_CACHE_PREFIX, CLIENT_STATE_PREFIX)
# Secrets moved from Key Vault per run: most move on their first read (every sync reads its cache);
# this catches the rest (connections in Error, quiet subscriptions) without one run growing with N.
MIGRATION_PAGE = 2000
PRUNE_WALKS = (PRUNE, PRUNE_MEETINGS, PRUNE_WORKSPACE_MEETINGS, PRUNE_ORPHANS, PRUNE_TRIES, INDEX_AWAITING)
bp = func.Blueprint()


@bp.function_name("erase_my_data")
@bp.route(route="outlook/data", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def erase_my_data(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    """Erase everything this service holds for the user: 202 once the erasure job is queued. Usually
    done before the answer (`erased`); otherwise the job finishes it within a minute (`erasing`).
    The platform erases a user who left the same way, with a token it issues for them."""
    done = c.erasure.request(user.id)
    return json_response({"status": "erased" if done is not None else "erasing"}, 202)


@bp.function_name("erase_user_data")
@bp.queue_trigger(arg_name="msg", queue_name=ERASURE_QUEUE, connection="AzureWebJobsStorage")
def erase_user_data(msg: func.QueueMessage) -> None:
    """The durable pass of an erasure (retried by the host, then `user-erasures-poison`)."""
    c = container()
    try:
        user_id, before, carried = decode_erasure(c.signer.verify(msg.get_body().decode("utf-8")))
    except ForgedMessage as forged:
        log.error("erasure message refused: %s", forged, extra={"event": "forged_queue_message",
                                                                "queue": ERASURE_QUEUE})
        return  # consumed, not retried: nothing is erased on a forged message's word
    erased = c.erasure.erase(user_id, before=before, carried=carried)
    log.info("erasure job done", extra={"user_id": user_id, "rows": erased.rows, "secrets": erased.secrets})


@bp.function_name("reconcile_secrets")
@bp.timer_trigger(arg_name="timer", schedule=schedule("RECONCILE_SCHEDULE"), run_on_startup=False, use_monitor=True)
def reconcile_secrets(timer: func.TimerRequest) -> None:
    """Daily: data keys re-wrapped under the Key Vault key's current version (after a rotation), a
    page of per-connection secrets still in Key Vault moved into sealed rows (while
    MIGRATE_VAULT_TOKEN_CACHES); then two walks a page per queue message (fan_out_page): the
    connections' secrets told their owner, then token caches and clientStates nothing names deleted
    (SecretReconciler); subscription rows of gone connections dropped."""
    c = container()
    rewrapped = c.data_keys.rewrap()
    moved = 0
    if c.settings.migrate_vault_token_caches:
        moved = c.sealed.migrate_legacy(LEGACY_PREFIXES, limit=MIGRATION_PAGE)
    c.fanout.start(ADOPT)  # its last page starts RECONCILE_CACHES, whose last starts RECONCILE_CLIENT_STATES
    c.fanout.start(SWEEP)
    log.info("reconcile_secrets started the secret and subscription walks",
             extra={"data_keys_rewrapped": rewrapped, "legacy_secrets_moved": moved})


@bp.function_name("prune_data")
@bp.timer_trigger(arg_name="timer", schedule=schedule("PRUNE_SCHEDULE"), run_on_startup=False, use_monitor=True)
def prune_data(timer: func.TimerRequest) -> None:
    """Daily: six walks, a page per queue message (fan_out_page): connections long in Error released;
    meetings and shared workspace meetings long past, sync rows of gone connections and old agent tries
    deleted (Pruner); the deployment watchdog's index row of every meeting awaiting a verdict written
    again (TableMeetingStore.reindex_page: meetings scheduled before the index existed)."""
    c = container()
    for kind in PRUNE_WALKS:
        c.fanout.start(kind)
    log.info("prune_data started %d walks", len(PRUNE_WALKS))
