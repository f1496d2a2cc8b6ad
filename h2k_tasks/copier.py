"""The copier: reads a source NBD export once, writes what it holds to an output export, and hashes
the guest-visible content on the way (docs/throughput.md, parts 1, 3 and 4).

The content digest is independent of formats, of how either side allocates and of how a copy is
cut: the disk is cut in chunks of CHUNK bytes, each chunk hashed (SHA-256; a chunk the allocation
map says is zero gets the digest of that many zero bytes without being read), the chunk digests of
each GROUP bytes hashed into a group digest, and the group digests into the content digest. Two
exports with the same content have the same digest; one byte of difference changes it.

A copy is bounded by `segment`, the most an attempt that dies copies again: it marks every half
segment (a step). After each step a marker thread flushes the output and hands `on_mark` a Mark
(bytes done and the group digests so far) while the next step is copied; a step ends only once the
previous step's mark is made, so the copy is never more than two steps past its last mark. Data
chunks are read and written by THREADS workers, each with its own connections; chunks that read as
all zeroes are not written (the output starts empty).
"""
from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

import nbd
from pydantic import BaseModel

from h2k_tasks import nbd as nbd_server
from h2k_tasks.process import Interrupted

CHUNK = 1 << 20
GROUP = 16 << 20
THREADS = 4
assert THREADS < nbd_server.CONNECTIONS  # each thread's connections and the main one, on each side
TICK_EVERY = 0.5
STATE_ZERO = 2  # base:allocation: the extent reads as zeroes


class Mark(BaseModel):
    """How far a copy got: bytes done (a multiple of the step, or the whole disk) and the
    digest of each group done."""
    done: int = 0
    groups: list[str] = []


class CopyFailed(Exception):
    """A read of the source or a write of the output failed; the message says which, where and why."""


def _why(e: nbd.Error, address: str) -> str:
    """The errno text of a failed request, or what the server said when it dropped the connection."""
    code = getattr(errno, e.errno, None) if isinstance(e.errno, str) else e.errno
    said = nbd_server.last_words(address)
    if code == errno.ENOTCONN and said:
        return said
    return os.strerror(code) if code else e.string


class Copied(BaseModel):
    content_sha256: str
    bytes_read: int
    bytes_written: int
    resumed_from: int


def content_digest(groups: list[str]) -> str:
    return hashlib.sha256(b"".join(bytes.fromhex(g) for g in groups)).hexdigest()


_zero_digests: dict[int, bytes] = {}
_ZEROES = bytes(CHUNK)


def _zeroes(length: int) -> bytes:
    return _ZEROES if length == CHUNK else bytes(length)


def _zero_digest(length: int) -> bytes:
    if length not in _zero_digests:
        _zero_digests[length] = hashlib.sha256(bytes(length)).digest()
    return _zero_digests[length]


def zero_runs(h: nbd.NBD, start: int, end: int) -> list[tuple[int, int]]:
    """The [lo, hi) runs of [start, end) that the export's allocation map says read as zeroes,
    adjacent extents merged."""
    runs: list[tuple[int, int]] = []
    offset = start
    while offset < end:
        seen: list[tuple[int, int, int]] = []

        def extents(context: str, at: int, entries: list[int], err) -> int:
            if context == nbd.CONTEXT_BASE_ALLOCATION:
                for length, flags in zip(entries[::2], entries[1::2]):
                    seen.append((at, min(at + length, end), flags))
                    at += length
            return 0

        h.block_status(min(end - offset, 1 << 30), offset, extents)
        if not seen:
            break
        for lo, hi, flags in seen:
            if lo >= hi or not flags & STATE_ZERO:
                continue
            if runs and runs[-1][1] == lo:
                runs[-1] = (runs[-1][0], hi)
            else:
                runs.append((lo, hi))
        offset = max(offset + 1, seen[-1][1])
    return runs


def zero_chunks(h: nbd.NBD, start: int, end: int) -> set[int]:
    """Offsets of the chunks of [start, end) (start a multiple of CHUNK) that read as zeroes whole."""
    chunks = set()
    for lo, hi in zero_runs(h, start, end):
        c = -(-lo // CHUNK) * CHUNK
        while c < hi and min(c + CHUNK, end) <= hi:
            chunks.add(c)
            c += CHUNK
    return chunks


class _Throttle:
    """At most `rate` bytes per second over all threads (0: no cap)."""

    def __init__(self, rate: int):
        self.rate, self.next, self.lock = rate, time.monotonic(), threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next)
            self.next = at + n / self.rate
        if at > now:
            time.sleep(at - now)


class _Connections:
    """One source (and output) connection per worker thread, all closed at the end."""

    def __init__(self, src: str, dst: str | None):
        self.src, self.dst, self.local, self.opened = src, dst, threading.local(), []

    def get(self) -> tuple[nbd.NBD, nbd.NBD | None]:
        if not hasattr(self.local, "pair"):
            pair = (nbd_server.connect(self.src), nbd_server.connect(self.dst) if self.dst else None)
            self.local.pair = pair
            self.opened.append(pair)
        return self.local.pair

    def close(self) -> None:
        for handle in (h for pair in self.opened for h in pair if h is not None):
            try:
                handle.shutdown()
            except nbd.Error:
                pass  # a connection the failure already closed


def copy(src: str, dst: str | None, size: int, *, segment: int, mark: Mark | None = None,
         on_mark: Callable[[Mark], None] = lambda m: None, tick: Callable[[], bool] = lambda: True,
         progress: Callable[[int], None] = lambda n: None, rate_limit: int = 0) -> Copied:
    """Copy export `src` ([0, size)) to export `dst` from `mark` on (None: from 0, `dst` empty), or with
    `dst` None only hash `src`. `segment` is a multiple of two GROUPs. Raises process.Interrupted when
    `tick()` returns False (the last mark stands); CopyFailed on a failed read or write, nbd.Error
    when a server stops answering."""
    if segment % (2 * GROUP) or not segment:
        raise ValueError(f"segment {segment} is not a multiple of {2 * GROUP}")
    step = segment // 2
    mark = Mark() if mark is None else mark.model_copy(deep=True)
    resumed_from = mark.done
    conns = _Connections(src, dst)
    throttle = _Throttle(rate_limit)
    counts = {"read": 0, "written": 0}
    lock = threading.Lock()

    def data_chunk(offset: int, length: int) -> bytes:
        s, d = conns.get()
        throttle.take(length)
        try:
            buf = s.pread(length, offset)
        except nbd.Error as e:
            raise CopyFailed(f"cannot read the source at offset {offset}: {_why(e, src)}") from None
        written = 0
        if d is not None and buf != _zeroes(length):
            try:
                d.pwrite(buf, offset)
            except nbd.Error as e:
                raise CopyFailed(f"cannot write the output at offset {offset}: {_why(e, dst)}") from None
            written = length
        with lock:
            counts["read"] += length
            counts["written"] += written
        return hashlib.sha256(buf).digest()

    main, out = conns.get()
    try:
        if dst is not None and 0 < mark.done < size:
            out.zero(size - mark.done, mark.done)  # whatever a dead attempt wrote past its mark
        last_tick = time.monotonic()
        marked: Future | None = None

        def flush_and_mark(m: Mark) -> None:
            if out is not None:
                out.flush()
            on_mark(m)

        with ThreadPoolExecutor(THREADS) as pool, ThreadPoolExecutor(1) as marker:
            while mark.done < size:
                start, end = mark.done, min(mark.done + step, size)
                zero = zero_chunks(main, start, end)
                digests: list[bytes | Future] = []
                for c in range(start, end, CHUNK):
                    length = min(CHUNK, end - c)
                    digests.append(_zero_digest(length) if c in zero else pool.submit(data_chunk, c, length))
                pending = {d for d in digests if isinstance(d, Future)}
                while pending:
                    finished, pending = wait(pending, timeout=TICK_EVERY, return_when=FIRST_COMPLETED)
                    failed = next((f.exception() for f in finished if f.exception()), None)
                    if failed is not None:  # the first failure in time; later ones follow from it
                        for f in pending:
                            f.cancel()
                        raise failed
                    if time.monotonic() - last_tick >= TICK_EVERY:
                        last_tick = time.monotonic()
                        if not tick():
                            for f in pending:
                                f.cancel()
                            raise Interrupted("copy stopped")
                        progress(end - CHUNK * len(pending))
                per_group = GROUP // CHUNK
                for g in range(0, len(digests), per_group):
                    h = hashlib.sha256()
                    for d in digests[g:g + per_group]:
                        h.update(d.result() if isinstance(d, Future) else d)
                    mark.groups.append(h.hexdigest())
                mark.done = end
                if marked is not None:
                    marked.result()  # marks in order; at most one flush behind the copy
                marked = marker.submit(flush_and_mark, mark.model_copy(deep=True))
                progress(end)
            if marked is not None:
                marked.result()
    finally:
        conns.close()
    return Copied(content_sha256=content_digest(mark.groups), bytes_read=counts["read"],
                  bytes_written=counts["written"], resumed_from=resumed_from)
