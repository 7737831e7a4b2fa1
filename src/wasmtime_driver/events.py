"""Task events for Nomad's TaskEvents stream, fanned out to every subscriber."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

# A subscriber that falls this far behind loses its oldest events, so that a
# stalled stream can never make the plugin's memory grow without bound.
MAX_QUEUED_EVENTS = 1000


@dataclass(frozen=True)
class TaskEvent:
    task_id: str
    alloc_id: str
    task_name: str
    message: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


class EventBroker:
    """Delivers each published event to every current subscriber."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[TaskEvent]] = set()

    def publish(self, event: TaskEvent) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[TaskEvent]:
        queue: asyncio.Queue[TaskEvent] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
