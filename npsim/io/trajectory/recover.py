"""Recovering a file whose writer was killed, and telling whether a writer still lives.

A process killed while it had a file open for writing leaves the write flags
set in the HDF5 superblock, and HDF5 then refuses to open the file.
:func:`clear_status_flags` does what ``h5clear -s --increment`` does, after
:func:`writer_alive` has made sure the writer is gone.
"""

from __future__ import annotations

import os
import socket
import time

from ...errors import TrajectoryCorrupt

__all__ = ["HDF5_SIGNATURE", "FLAG_WRITE", "FLAG_SWMR_WRITE", "writer_alive", "written_elsewhere",
           "superblock_flags", "shorter_than_recorded", "clear_status_flags"]

# Superblock (format versions 2 and 3) status flags, as cleared by `h5clear -s`.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FLAG_WRITE = 0x01
FLAG_SWMR_WRITE = 0x04
_EOA_INCREMENT = 1 << 20  # as `h5clear -s --increment`: room past the old end of file


def writer_alive(pid, host, *, wait: float = 0.0) -> bool:
    """Whether the process that last opened the file for writing may still run.

    pid, host : the file's ``writer_pid`` and ``writer_host`` attributes.
    wait : seconds to wait for a live writer to exit before answering.

    Only a process on this host can be checked; a writer on another host is
    taken to be gone (the run is being resumed elsewhere after a crash), and so
    is this process itself. A zombie (exited, not yet reaped) is gone.
    """
    deadline = time.monotonic() + wait
    while _alive(pid, host):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)
    return False


def _alive(pid, host) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombie: dead, not reaped
    except (OSError, IndexError):
        return True


def written_elsewhere(path: str) -> bool | None:
    """Whether another process on this host has ``path`` open for writing (None: cannot tell here).

    Reads ``/proc/*/fd`` (Linux): the answer needs no HDF5 open, which is what a
    reader wants to know before it trusts a file shorter than its header records.
    Processes of other users that this one may not inspect are not seen.
    """
    if not os.path.isdir("/proc/self/fd"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return False
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.stat(f"/proc/{pid}/fd/{fd}")
                if (target.st_dev, target.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    flags = next(int(line.split()[1], 8) for line in fh if line.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                return True
    return False


def superblock_flags(path: str) -> int:
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:8] != HDF5_SIGNATURE or head[8] < 2:
        return 0
    return head[11]


def shorter_than_recorded(path: str) -> bool:
    """Whether the file ends before the end-of-file address its superblock records."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:8] != HDF5_SIGNATURE or head[8] < 2:
            return False
        osize = head[9]
        addrs = fh.read(4 * osize)
        size = os.fstat(fh.fileno()).st_size
    if len(addrs) < 4 * osize:
        return True
    base = int.from_bytes(addrs[:osize], "little")
    eoa = int.from_bytes(addrs[2 * osize : 3 * osize], "little")
    return size < base + eoa


def clear_status_flags(path: str) -> None:
    """What ``h5clear -s --increment`` does: clear the write flags a killed writer left set.

    The end-of-file address is moved past both its recorded value and the
    actual file end, so nothing written after the last flush is reused.
    """
    with open(path, "r+b") as fh:
        head = fh.read(12)
        osize = head[9]
        n = 12 + 4 * osize
        fh.seek(0)
        block = bytearray(fh.read(n + 4))
        if len(block) != n + 4 or _lookup3(bytes(block[:n])) != int.from_bytes(block[n:], "little"):
            raise TrajectoryCorrupt(f"{path}: corrupt HDF5 superblock (checksum mismatch)")
        addr = lambda i: int.from_bytes(block[12 + i * osize : 12 + (i + 1) * osize], "little")  # noqa: E731
        base, eoa = addr(0), addr(2)
        size = os.fstat(fh.fileno()).st_size
        eoa = max(eoa, size - base) + _EOA_INCREMENT
        block[11] &= ~(FLAG_WRITE | FLAG_SWMR_WRITE) & 0xFF
        block[12 + 2 * osize : 12 + 3 * osize] = eoa.to_bytes(osize, "little")
        block[n:] = _lookup3(bytes(block[:n])).to_bytes(4, "little")
        fh.truncate(base + eoa)  # extends (sparsely), so the file is not "truncated"
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(0)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 uses for metadata."""
    m = 0xFFFFFFFF

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & m

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & m
        a = (a - c) & m; a ^= rot(c, 4); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= rot(a, 6); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= rot(b, 8); b = (b + a) & m  # noqa: E702
        a = (a - c) & m; a ^= rot(c, 16); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= rot(a, 19); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= rot(b, 4); b = (b + a) & m  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = bytes(data[i:]) + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - rot(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & m  # noqa: E702
    return c
