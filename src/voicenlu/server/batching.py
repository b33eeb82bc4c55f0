"""The model thread of a worker, and the micro-batcher that groups /parse requests."""

import asyncio
import ctypes
import functools
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from voicenlu.runtime import Parser
from voicenlu.server.metrics import Metrics

try:  # glibc's allocator, whose memory the lane hands back after big batches
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # another C library: its own policy applies
    _LIBC = None
_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


class ModelLane:
    """The one thread a worker runs its model on, so requests queue instead of competing.

    Concurrent session runs would each start the runtime's own threads on the same cores
    and slow every request down; one run at a time keeps latency flat under load, and the
    event loop stays free to accept and answer requests meanwhile.
    """

    def __init__(self):
        if _LIBC is not None:
            # One heap for every thread: the model thread's own arena would keep the high-water
            # mark of the largest batch (about 20-70 MB after 192 texts of 1,000 characters).
            _LIBC.mallopt(_M_ARENA_MAX, 1)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicenlu-model")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def release_memory(self) -> None:
        """Return the heap that a big batch freed to the OS, so RSS falls back to its baseline."""
        if _LIBC is not None:
            await self.run(_LIBC.malloc_trim, 0)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class MicroBatcher:
    """Groups /parse requests into one ``parse_batch`` call: those already waiting when the
    model frees up, plus those that arrive within ``window_s``.

    One batch of n texts costs less than n single runs, so under concurrent load this trades
    up to ``window_s`` of added latency for throughput.
    """

    def __init__(
        self, parser: Parser, lane: ModelLane, window_s: float, max_batch: int, metrics: Metrics
    ):
        self.parser = parser
        self.lane = lane
        self.window_s = window_s
        self.max_batch = max_batch
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    async def parse(self, text: str, threshold: float | None, when: tuple = (None, None)) -> dict:
        """Parse ``text`` in the next batch; ``when`` is its (reference_time, timezone)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((text, (threshold, *when), future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                if not self.queue.empty():  # queued while the model was busy: no waiting
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            # parse_batch takes one threshold and one reference time: requests that chose
            # different ones run apart.
            groups = defaultdict(list)
            for item in batch:
                groups[item[1]].append(item)
            for options, items in groups.items():
                await self._parse_group(options, items)

    async def _parse_group(self, options: tuple, items: list) -> None:
        # A request whose client went away cancelled its future: its text is not parsed.
        items = [item for item in items if not item[2].cancelled()]
        if not items:
            return
        self.metrics.observe_batch(len(items))
        self.metrics.parsed.inc(len(items))
        texts = [text for text, _, _ in items]
        threshold, reference_time, timezone = options
        run = functools.partial(
            self.parser.parse_batch, reference_time=reference_time, timezone=timezone
        )
        try:
            results = await self.lane.run(run, texts, threshold)
        except Exception as exc:  # hand the error to every waiting request, keep serving
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(items, results, strict=True):
            if not future.done():  # a client that went away cancelled its future
                future.set_result(result)
