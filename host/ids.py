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
    h = f"{_next_value():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _next_value() -> int:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # 12-bit counter spent: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = _random.getrandbits(10)
        _last_ms = ms
        counter = _counter
        rand = _random.getrandbits(62)
    return (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
