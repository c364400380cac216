"""Run ids: UUIDv7, so ids sort by creation time and index inserts stay at the right edge."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_lock = threading.Lock()
#: Seeded from os.urandom; ids need uniqueness, not secrecy, and a syscall per id is slow.
_random = random.Random()
# A forked child must not repeat its parent's sequence.
os.register_at_fork(after_in_child=_random.seed)
_last_ms = 0
_counter = 0


def new_run_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562), monotonic within this process even within one millisecond."""
    return uuid.UUID(int=_next_value())


def new_run_id_text() -> str:
    """new_run_id() as its canonical text, without building a UUID object (the producer makes
    one per run)."""
    return _text(_next_value())


def new_run_ids_text(count: int) -> list[str]:
    """`count` ids as text, as many new_run_id_text() calls in a row would make them, but with
    one lock and one clock reading for the batch (a producer's enqueue_many makes hundreds)."""
    return [_text(value) for value in _next_values(count)]


def _text(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _next_value() -> int:
    return _next_values(1)[0]


def _next_values(count: int) -> list[int]:
    """Consecutive id values: the millisecond now (never before the last one), a 12-bit counter
    that starts at random in a new millisecond and goes up within one (borrowing the next
    millisecond when spent), and 62 random bits."""
    global _last_ms, _counter
    values = []
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, counter = _last_ms, _counter
        bits = _random.getrandbits
        for _ in range(count):
            if ms <= last_ms:
                ms = last_ms
                counter += 1
                if counter > 0xFFF:  # 12-bit counter spent: borrow the next millisecond
                    ms += 1
                    counter = 0
            else:
                counter = bits(10)
            last_ms = ms
            values.append((ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | bits(62))
        _last_ms, _counter = last_ms, counter
    return values
