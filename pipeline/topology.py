"""Every exchange, queue and binding mailpipe uses, declared here and nowhere else.

The same objects produce the FastStream declarations (:func:`rabbit_queue`,
:func:`rabbit_exchange`) and ``rabbitmq/definitions.json`` (:func:`definitions`); a test keeps
the committed file equal to what this module builds, because RabbitMQ refuses a redeclaration
with different arguments (``PRECONDITION_FAILED``).

Queue types, decided deliberately for RabbitMQ 3.10:

* Work queues (ingest, cancel, the three pools, dead-letter) are **quorum** queues: replicated,
  always persisted, and they count redeliveries, so ``x-delivery-limit`` moves a message that
  keeps crashing its consumer to ``mail.dlx`` instead of looping forever. 3.10 has no default
  limit (4.0 added 20), so we set one. Quorum queues on 3.10 have no priorities: priority
  ordering lives in the scheduler's query, not in the queue.
* ``x-dead-letter-strategy: at-least-once`` (needs ``x-overflow: reject-publish``) makes the
  broker keep a dead-lettered message until ``mail.dead-letter`` confirms it.
* The scheduler's wake-up queue is a **classic** queue with a short TTL and a length cap: a
  wake-up is a hint (the scheduler polls anyway), so losing one costs at most one poll interval.
* DLX and delivery limit are queue arguments rather than policies, so a broker on which nobody
  loaded the definitions still dead-letters instead of silently dropping; the trade-off is that
  changing them means a new queue (documented in docs/runbooks.md). Policies do not replace
  the dead-letter arguments, but on 3.10 a policy's ``overflow`` wins and the lower of a
  policy's and our ``delivery-limit`` applies: rabbitmq/README.md lists the safe policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

__all__ = [
    "BINDINGS",
    "COMMANDS",
    "DEAD_LETTER_QUEUE",
    "DELIVERY_LIMIT",
    "DISPATCH",
    "DLX",
    "EVENTS",
    "EXCHANGES",
    "QUEUES",
    "Binding",
    "Exchange",
    "Queue",
    "definitions",
    "queue_named",
    "rabbit_exchange",
    "rabbit_queue",
]

DELIVERY_LIMIT = 10


@dataclass(frozen=True)
class Exchange:
    name: str
    type: Literal["direct", "topic", "fanout"]


@dataclass(frozen=True)
class Queue:
    name: str
    type: Literal["quorum", "classic"]
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


COMMANDS = Exchange("mail.commands", "direct")
EVENTS = Exchange("mail.events", "topic")
DISPATCH = Exchange("mail.dispatch", "direct")
DLX = Exchange("mail.dlx", "fanout")
EXCHANGES = (COMMANDS, EVENTS, DISPATCH, DLX)

_WORK_ARGS: dict[str, Any] = {
    "x-dead-letter-exchange": DLX.name,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
    "x-delivery-limit": DELIVERY_LIMIT,
}

INGEST_QUEUE = Queue("mail.ingest", "quorum", _WORK_ARGS)
CANCEL_QUEUE = Queue("mail.cancel", "quorum", _WORK_ARGS)
WAKE_QUEUE = Queue(
    "mail.scheduler.wake",
    "classic",
    {"x-message-ttl": 60_000, "x-max-length": 1000, "x-overflow": "drop-head"},
)
NO_ATTACHMENT_QUEUE = Queue("mail.send.no-attachment", "quorum", _WORK_ARGS)
ATTACHMENT_QUEUE = Queue("mail.send.attachment", "quorum", _WORK_ARGS)
BACKUP_QUEUE = Queue("mail.backup", "quorum", _WORK_ARGS)
DEAD_LETTER_QUEUE = Queue("mail.dead-letter", "quorum")
QUEUES = (
    INGEST_QUEUE,
    CANCEL_QUEUE,
    WAKE_QUEUE,
    NO_ATTACHMENT_QUEUE,
    ATTACHMENT_QUEUE,
    BACKUP_QUEUE,
    DEAD_LETTER_QUEUE,
)

BINDINGS = (
    Binding(COMMANDS.name, INGEST_QUEUE.name, "send-email"),
    Binding(COMMANDS.name, CANCEL_QUEUE.name, "cancel-email"),
    Binding(EVENTS.name, WAKE_QUEUE.name, "email.received"),
    Binding(EVENTS.name, WAKE_QUEUE.name, "email.sent"),
    Binding(DISPATCH.name, NO_ATTACHMENT_QUEUE.name, "no-attachment"),
    Binding(DISPATCH.name, ATTACHMENT_QUEUE.name, "attachment"),
    Binding(DISPATCH.name, BACKUP_QUEUE.name, "backup"),
    Binding(DLX.name, DEAD_LETTER_QUEUE.name, ""),
)


def queue_named(name: str) -> Queue:
    for queue in QUEUES:
        if queue.name == name:
            return queue
    raise KeyError(name)


def rabbit_exchange(exchange: Exchange) -> RabbitExchange:
    return RabbitExchange(exchange.name, type=ExchangeType(exchange.type), durable=True)


def rabbit_queue(queue: Queue, routing_key: str = "") -> RabbitQueue:
    """The FastStream declaration of ``queue``, bound with ``routing_key`` when consumed."""
    arguments: Any = dict(queue.arguments)
    if queue.type == "quorum":
        return RabbitQueue(
            queue.name, queue_type=QueueType.QUORUM, durable=True, arguments=arguments, routing_key=routing_key
        )
    return RabbitQueue(
        queue.name, queue_type=QueueType.CLASSIC, durable=True, arguments=arguments, routing_key=routing_key
    )


def definitions(vhost: str = "/") -> dict[str, Any]:
    """The topology as a management-plugin definitions document (``rabbitmqctl import_definitions``)."""
    return {
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in EXCHANGES
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-queue-type": q.type, **q.arguments},
            }
            for q in QUEUES
        ],
        "bindings": [
            {
                "source": b.exchange,
                "vhost": vhost,
                "destination": b.queue,
                "destination_type": "queue",
                "routing_key": b.routing_key,
                "arguments": {},
            }
            for b in BINDINGS
        ],
        "policies": [],
    }
