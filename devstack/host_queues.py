"""Queue triggers and queue outputs for the local Functions host, on Azure Storage queues (Azurite).

A `QueueListener` per queue-triggered function behaves like the Functions queue extension:
- messages are base64 text (host.json `messageEncoding` "base64", the default) and are handed to
  the function as bytes; a message that is not valid base64 goes straight to `<queue>-poison`;
- it receives up to `batchSize` messages at a time, fetching again once the messages still in
  flight drop to `newBatchThreshold`; polling backs off from 100 ms up to `maxPollingInterval`
  while the queue is empty and snaps back as soon as a message arrives;
- success deletes the message; failure makes it visible again after `visibilityTimeout`; a
  message that fails with `dequeue_count >= maxDequeueCount` is copied, as received, to
  `<queue>-poison` and deleted;
- a received message stays invisible for 10 minutes, renewed at half that while its function
  runs, as the Azure host does (azure-webjobs-sdk QueueListener); so a message taken by an instance
  that crashes comes back only after up to 10 minutes, as in Azure. `DEVSTACK_QUEUE_LEASE_SECONDS`
  shortens that for tests of the local host only (Azure has no such setting).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import azure.functions.queue as func_queue
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage

from devstack.host_config import QueueOptions

log = logging.getLogger("devstack.host")


class QueueConfigError(Exception):
    pass


def storage_connection_string(connection: str, environ: Mapping[str, str] | None = None) -> str:
    """The connection string behind a binding's `connection` setting name.

    Like the Functions host, `X` is looked up as `X` then `AzureWebJobsX`. Identity-based
    connections (`X__queueServiceUri`, `X__serviceUri`, `X__accountName`) need managed identity,
    which does not exist locally: those fail with a message saying what to set instead.
    """
    env = os.environ if environ is None else environ
    name = connection or "AzureWebJobsStorage"
    for candidate in (name, f"AzureWebJobs{name}"):
        value = env.get(candidate)
        if value:
            return value
    identity_keys = sorted(k for k in env if k.startswith(f"{name}__"))
    if identity_keys:
        raise QueueConfigError(
            f"connection '{name}' is identity-based ({', '.join(identity_keys)}); the local host cannot use "
            f"managed identity. Set {name} to a connection string (Azurite's, with explicit endpoints)."
        )
    raise QueueConfigError(f"app setting '{name}' (a storage connection string) is not set")


class QueueClients:
    """One QueueClient per (connection, queue), each queue created the first time it is used."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], QueueClient] = {}
        self._created: set[tuple[str, str]] = set()
        self._wake_hooks: dict[str, list[Callable[[], None]]] = {}

    def client(self, connection: str, queue_name: str, *, ensure_exists: bool = True) -> QueueClient:
        conn_str = storage_connection_string(connection, self._environ)
        key = (conn_str, queue_name)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = QueueClient.from_connection_string(conn_str, queue_name, retry_total=2)
                self._clients[key] = client
        if ensure_exists and key not in self._created:
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            with self._lock:
                self._created.add(key)
        return client

    def on_new_message(self, queue_name: str, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wake_hooks.setdefault(queue_name.lower(), []).append(wake)

    def send(self, connection: str, queue_name: str, bodies: list[bytes], *, encoding: str) -> None:
        client = self.client(connection, queue_name)
        for body in bodies:
            client.send_message(encode_body(body, encoding))
        # Like the host's shared queue watcher: a listener in this host polls at once.
        with self._lock:
            hooks = list(self._wake_hooks.get(queue_name.lower(), []))
        for wake in hooks:
            wake()

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()


def encode_body(body: bytes, encoding: str) -> str:
    return base64.b64encode(body).decode("ascii") if encoding == "base64" else body.decode("utf-8")


def decode_content(content: str, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(content.encode("ascii"), validate=True)
    return content.encode("utf-8")


MessageHandler = Callable[[func_queue.QueueMessage], bool]


class QueueListener:
    """Polls one queue for one function; see the module docstring for the semantics."""

    def __init__(
        self,
        *,
        function_name: str,
        queue_name: str,
        connection: str,
        clients: QueueClients,
        options: QueueOptions,
        handler: MessageHandler,
        executor: ThreadPoolExecutor,
        lease_seconds: int,
        stopping: threading.Event,
    ) -> None:
        self.function_name = function_name
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self._connection = connection
        self._clients = clients
        self._options = options
        self._handler = handler
        self._executor = executor
        self._lease_seconds = lease_seconds
        self._stopping = stopping
        self._wake = threading.Event()
        self._lock = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name=f"queue-{function_name}", daemon=True)
        clients.on_new_message(queue_name, self.wake)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    def _run(self) -> None:
        queue = self._connect()
        if queue is None:
            return
        delay = self._options.min_polling_interval
        failing = False
        while not self._stopping.is_set():
            if self.in_flight > self._options.new_batch_threshold:
                self._sleep(0.05)
                continue
            try:
                messages = list(
                    queue.receive_messages(
                        messages_per_page=self._options.batch_size,
                        max_messages=self._options.batch_size,
                        visibility_timeout=self._lease_seconds,
                    )
                )
                if failing:
                    log.info("Queue '%s' is reachable again", self.queue_name)
                failing = False
            except Exception as error:  # storage down: keep trying at the slowest pace
                if not failing:
                    log.warning("Polling queue '%s' failed: %s", self.queue_name, error)
                failing = True
                self._sleep(self._options.max_polling_interval)
                continue
            if messages:
                delay = self._options.min_polling_interval
                for message in messages:
                    self._dispatch(queue, message)
                continue
            self._sleep(delay)
            delay = min(delay * 2, self._options.max_polling_interval)

    def _connect(self) -> QueueClient | None:
        while not self._stopping.is_set():
            try:
                return self._clients.client(self._connection, self.queue_name)
            except Exception as error:
                log.warning("Queue '%s' for %s is not reachable yet: %s", self.queue_name, self.function_name, error)
                self._sleep(min(2.0, self._options.max_polling_interval))
        return None

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _dispatch(self, queue: QueueClient, message: QueueMessage) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            self._executor.submit(self._process, queue, message)
        except RuntimeError:  # executor shut down: give the message back
            self._finish()
            self._release(queue, message)

    def _finish(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()
        self.wake()

    def _process(self, queue: QueueClient, message: QueueMessage) -> None:
        try:
            if self._stopping.is_set():
                self._release(queue, message)
                return
            dequeue_count = int(message.dequeue_count or 1)
            if dequeue_count > self._options.max_dequeue_count:
                self._poison(queue, message, "it was already dequeued more than maxDequeueCount times")
                return
            try:
                body = decode_content(str(message.content or ""), self._options.message_encoding)
            except (binascii.Error, ValueError, UnicodeError):
                self._poison(queue, message, "its content is not valid base64")
                return
            trigger = func_queue.QueueMessage(
                id=message.id,
                body=body,
                dequeue_count=dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            keeper = _LeaseKeeper(queue, message, self._lease_seconds)
            try:
                succeeded = self._handler(trigger)
            finally:
                keeper.stop()
            message.pop_receipt = keeper.pop_receipt
            if succeeded:
                queue.delete_message(message.id, message.pop_receipt)
            elif dequeue_count >= self._options.max_dequeue_count:
                self._poison(queue, message, f"it failed {dequeue_count} times (maxDequeueCount)")
            else:
                retry_in = round(self._options.visibility_timeout)
                queue.update_message(message.id, message.pop_receipt, visibility_timeout=retry_in)
        except Exception:
            log.exception("Handling message %s of queue '%s' failed", message.id, self.queue_name)
        finally:
            self._finish()

    def _poison(self, queue: QueueClient, message: QueueMessage, why: str) -> None:
        log.warning(
            "Message %s of queue '%s' moved to '%s': %s", message.id, self.queue_name, self.poison_queue_name, why
        )
        poison = self._clients.client(self._connection, self.poison_queue_name)
        poison.send_message(message.content)
        queue.delete_message(message.id, message.pop_receipt)

    def _release(self, queue: QueueClient, message: QueueMessage) -> None:
        try:
            queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)
        except Exception as error:
            log.debug("Could not release message %s: %s", message.id, error)


class _LeaseKeeper:
    """Keeps a message invisible while its function runs: renewed at half the lease."""

    def __init__(self, queue: QueueClient, message: QueueMessage, lease: int) -> None:
        self.pop_receipt = message.pop_receipt
        self._queue = queue
        self._id = message.id
        self._lease = lease
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{message.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._lease / 2):
            try:
                updated = self._queue.update_message(self._id, self.pop_receipt, visibility_timeout=self._lease)
                self.pop_receipt = updated.pop_receipt
            except Exception as error:
                log.debug("Could not renew message %s: %s", self._id, error)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


AZURE_MESSAGE_LEASE_SECONDS = 600  # the Azure host's initial visibility of a received message


def lease_seconds(environ: Mapping[str, str] | None = None) -> int:
    """How long a received message stays invisible (renewed while it runs); see the module docstring."""
    env = os.environ if environ is None else environ
    override = env.get("DEVSTACK_QUEUE_LEASE_SECONDS")
    return max(1, int(override)) if override else AZURE_MESSAGE_LEASE_SECONDS
