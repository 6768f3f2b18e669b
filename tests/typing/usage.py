"""Checked by mypy --strict (noxfile: the types step), never run: the
stubs give the types a user expects, and reject what the runtime rejects."""
from array import array
from pathlib import Path
from typing import Literal

from typing_extensions import assert_type

import pymmapdev


def check(m: pymmapdev.Mapping) -> None:
    assert_type(m[0], int)
    assert_type(m[0:4], bytes)
    m[0] = 1
    m[0:4] = b"abcd"
    m[0:4] = bytearray(4)
    m[0:4] = memoryview(b"abcd")
    assert_type(memoryview(m), memoryview)
    assert_type(m.read(0, 4), bytes)
    assert_type(m.read_u64(0), int)
    assert_type(m.wait(0, 0, timeout=0.1), bool)
    assert_type(m.read_words(0, 4, width=2), array[int])
    m.write_words(0, [1, 2], 8)
    m.read_words(0, 1, width=3)  # type: ignore[arg-type]
    with pymmapdev.Lock(m, 0) as lock:
        assert_type(lock.owner_died, bool)
    slot = pymmapdev.Slot(m, 64, 8)
    assert_type(slot.read(), tuple[int, bytes])
    assert_type(slot.mapping, pymmapdev.Mapping)
    with pymmapdev.open_file("/dev/shm/x", 4096) as f:
        assert_type(f, pymmapdev.Mapping)
        assert_type(f.kind, Literal["file", "device"])
    ch = pymmapdev.Channel(m, 128, 4096)
    assert_type(ch.recv(), bytes)
    assert_type(ch.recv(timeout=0.5), bytes | None)
    with ch.reserve(5) as buf:       # no timeout: always a view
        buf[:] = b"hello"
    with ch.reserve(5, timeout=0.5) as maybe:
        assert_type(maybe, memoryview | None)
    with ch.recv_view() as view:
        assert_type(bytes(view), bytes)
    with pymmapdev.open_channel(Path("/dev/shm/x"), 4096) as owned:
        assert_type(owned, pymmapdev.Channel)
    # errors the stubs must catch (--strict reports an ignore that is not needed)
    m[0] = b"x"  # type: ignore[call-overload]
    m[0:1] = 1  # type: ignore[call-overload]
    pymmapdev.set_spin(rounds=3)  # type: ignore[call-arg]


async def check_async(m: pymmapdev.Mapping, slot: pymmapdev.Slot) -> None:
    assert_type(await m.wait_async(0, 0), bool)
    assert_type(await m.wait_async(0, 0, timeout=0.5), bool)
    assert_type(await slot.wait_newer_async(slot.version, timeout=None), bool)
    await m.wait_async(0, 0, spin=1)  # type: ignore[call-arg]


async def check_channel_async(ch: pymmapdev.Channel) -> None:
    assert_type(await ch.recv_async(), bytes)
    assert_type(await ch.recv_async(timeout=1), bytes | None)


def check_paths() -> None:
    # open_channel takes what open_file takes (bytes and bytes paths too)
    with pymmapdev.open_channel(b"/dev/shm/x") as raw:
        assert_type(raw, pymmapdev.Channel)
    pymmapdev.open_channel(Path("/dev/shm/x"), 1 << 20, multi_producer=True, mode=0o640).close()


def check_uio_paths() -> None:
    # UIO takes what open_device takes: str, bytes and both kinds of PathLike
    for path in ("/dev/uio0", b"/dev/uio0", Path("/dev/uio0"), PurePosixBytesPath()):
        with pymmapdev.UIO(path) as u:
            assert_type(u.device, str)


class PurePosixBytesPath:
    def __fspath__(self) -> bytes:
        return b"/dev/uio0"
