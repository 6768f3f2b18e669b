"""The command line, python -m pymmapdev: demo, write, watch, info, kmod.

Lives outside __main__ so that spawned demo processes can import it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn

import pymmapdev
from pymmapdev import _core, _sysfs
from pymmapdev._open import MAX_OFFSET, in_dev_filesystem, map_file_range

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

DEMO_CAPACITY = 64


def _is_device(path: str) -> bool:
    """A character device, a PCI BAR's sysfs resource file (device memory
    sysfs shows as a regular file), or a path that should be a device: an
    absent name in the /dev filesystem itself is a device that is not
    there, e.g. the module is not loaded, never a regular file to create."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode) or \
            _sysfs.pci_resource_file(path) is not None
    except FileNotFoundError:
        return in_dev_filesystem(path)
    except OSError:
        return False


def _open(path: str, readonly: bool = False,
          device_size: int | None = None) -> pymmapdev.Mapping:
    """A file, or a device (--size bytes of it from its start, if given)."""
    if _is_device(path):
        return _open_device(path, device_size, readonly)
    _no_size_for_a_file(path, device_size)
    return pymmapdev.open_file(path, create=not readonly, readonly=readonly)


def _tells_its_size(path: str) -> bool | None:
    """Whether a character device can tell its size (only our module's
    devices can; open_device() needs one for any other, which --size
    gives); None if there is none to ask (the open that follows names the
    error)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return _sysfs.is_mmapdev(st)


def _open_device(path: str, size: int | None, readonly: bool = False) -> pymmapdev.Mapping:
    tells = _tells_its_size(path)
    if size is None and tells is False:     # not open_device's "pass size=": an API hint
        raise ValueError(f"{path!r} cannot tell its size: give --size BYTES, how much of the "
                         f"device to map from its start")
    if size is not None and tells:          # less of it: the heartbeat's header cut short
        raise ValueError(f"--size is for a device that cannot tell its size; {path!r} tells "
                         f"its own")
    return pymmapdev.open_device(path, size, readonly=readonly)


def _no_size_for_a_file(path: str, size: int | None) -> None:
    if size is not None:
        raise ValueError(f"--size is for a device that cannot tell its size; {path!r} is "
                         f"not a character device")


def _int_from(low: int) -> Callable[[str], int]:
    """An argparse type: an int >= low ("invalid int >= 1 value: '0'")."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError(text)
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0 that a sleep can take
    (time.sleep(1e300) raises OverflowError)."""
    value = float(text)
    if not 0 < value <= threading.TIMEOUT_MAX:
        raise ValueError(text)
    return value


_seconds.__name__ = f"seconds in (0, {threading.TIMEOUT_MAX:.0f}]"


def _nonempty(text: str) -> str:
    """An argparse type for a path option: an empty one (an unset shell
    variable, --root "$DEST") is refused, never taken as the default or
    the current directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (leave the option out for its "
                                         "default)")
    return text


def _text_at(m: pymmapdev.Mapping, offset: int, length: int) -> str:
    raw = m.read(offset, min(length, m.size - offset))
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").rstrip("\n")


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has exited (`watch | head -1`):
    the write end then polls POLLERR.  A watch that prints only on change
    would otherwise wait for the next change to find out."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):   # no descriptor (a StringIO, pytest's capture)
        return False
    poller = select.poll()
    poller.register(fd, 0)          # POLLERR and POLLHUP are always reported
    return bool(poller.poll(0))


def _one_line(exc: BaseException) -> str:
    """An error's message on one line: a path in it may hold a newline or
    a terminal escape (the command's own messages quote paths with repr();
    the library's may not), escaped here as repr() escapes them."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(exc))


class _ReaderGone(Exception):
    """stdout's reader has gone: end quietly, as a SIGPIPE would."""


# ---- demo -------------------------------------------------------------------

def _say(text: str) -> None:
    """One line in one write(2): atomic on a pipe, so the writer's and the
    reader's lines never interleave mid-line (print() may split them)."""
    os.write(sys.stdout.fileno(), (text + "\n").encode())


def _quietly(who: str, body: Callable[[], None]) -> None:
    """A demo process: Ctrl-C (the terminal sends it to all three) and a
    closed stdout end it with a status, not a traceback each; so does what
    another process mapping the file may cause (a garbage Slot header is a
    PeerDied), with one line naming *who* failed."""
    try:
        body()
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except (OSError, ValueError) as exc:
        print(f"pymmapdev demo {who}: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)


def _demo_writer(path: str, count: int, interval: float) -> None:
    _quietly("writer", lambda: _write_values(path, count, interval))


def _demo_reader(path: str, count: int, ready: Event) -> None:
    _quietly("reader", lambda: _read_values(path, count, ready))


def _write_values(path: str, count: int, interval: float) -> None:
    with pymmapdev.open_file(path, create=False) as m:
        slot = pymmapdev.Slot(m, 0, DEMO_CAPACITY)
        for n in range(1, count + 1):
            time.sleep(interval)
            slot.publish(f"value = {n}".encode())
            _say(f"writer: value = {n}")


def _read_values(path: str, count: int, ready: Event) -> None:
    with pymmapdev.open_file(path, create=False, readonly=True) as m:
        slot = pymmapdev.Slot(m, 0, DEMO_CAPACITY)
        version, _ = slot.read()
        ready.set()
        while True:
            if not slot.wait_newer(version, timeout=10):
                _say("reader: no update for 10 s, giving up")
                sys.exit(1)
            version, data = slot.read()
            text = data.decode("utf-8", "replace")     # any process may publish
            _say(f"reader: saw {text!r} (version {version})")
            if text == f"value = {count}":
                return


def cmd_demo(args: argparse.Namespace) -> int:
    path = args.path or os.path.join(
        "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
        f"pymmapdev-demo-{os.getpid()}")
    ctx = multiprocessing.get_context("spawn")  # two fresh interpreters
    with pymmapdev.open_file(path, pymmapdev.Slot.size_for(DEMO_CAPACITY)) as m:
        m[:] = bytes(m.size)
    procs: list[multiprocessing.process.BaseProcess] = []
    try:                            # from here on, whatever happens, clean up
        _say(f"demo: a writer and a reader process share {path}")
        ready = ctx.Event()
        reader = ctx.Process(target=_demo_reader, args=(path, args.count, ready))
        procs.append(reader)
        reader.start()
        ready.wait(30)
        writer = ctx.Process(target=_demo_writer, args=(path, args.count, args.interval))
        procs.append(writer)
        writer.start()
        writer.join()
        reader.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        if not args.path:
            os.unlink(path)
    ok = writer.exitcode == 0 and reader.exitcode == 0
    _say("demo: done" if ok else "demo: FAILED")
    return 0 if ok else 1


# ---- write / watch / info ---------------------------------------------------

def cmd_write(args: argparse.Namespace) -> int:
    data = os.fsencode(args.text)   # the bytes given, UTF-8 or not
    if not args.no_newline:
        data += b"\n"
    data += b"\0"  # so readers of the text see where it ends
    needed = args.offset + len(data)
    if _is_device(args.path):
        m = _open_device(args.path, args.size)
    else:
        _no_size_for_a_file(args.path, args.size)
        if needed > MAX_OFFSET:
            raise ValueError(f"offset {args.offset} + {len(data)} bytes is past the largest "
                             f"file offset ({MAX_OFFSET}) ({args.path!r})")
        m = map_file_range(args.path, args.offset, len(data)) or \
            pymmapdev.open_file(args.path, needed)
    with m:
        if needed > m.offset + m.size:
            raise ValueError(f"offset {args.offset} + {len(data)} bytes is past the end of "
                             f"{args.path!r} ({m.size} bytes)")
        m.write(args.offset - m.offset, data)     # m.offset: where m starts in the file
        m.flush()
    return 0


# struct mmapdev_heartbeat (kmod/uapi/mmapdev.h)
HB_SEQ, HB_WRITE_SEQ, HB_TEXT, HB_TEXT_SIZE = 0, 4, 16, 48
HB_READ_TRIES = 100


def _heartbeat_read(m: pymmapdev.Mapping) -> tuple[int, str]:
    """(write_seq, text) of the heartbeat, read inside the module's seqlock:
    the same even write_seq before and after means no beat was written
    meanwhile, and names the beat read (2 * its counter).  A beat being
    written takes microseconds; a peer that writes write_seq itself can
    only corrupt the data, so after HB_READ_TRIES the text is taken as read
    (a bounded wait, as everywhere)."""
    for attempt in range(HB_READ_TRIES):
        if attempt:
            time.sleep(0.001)   # the writer may be preempted mid-beat
        before = m.load_u32(HB_WRITE_SEQ)
        text = _text_at(m, HB_TEXT, HB_TEXT_SIZE)
        # load_u32 is sequentially consistent, ordered with the reads
        # around it: the text's bytes are read between the two loads.
        if before % 2 == 0 and m.load_u32(HB_WRITE_SEQ) == before:
            break
    return before, text


def _watch_heartbeat(m: pymmapdev.Mapping) -> NoReturn:
    """Device with a kernel-side producer: sleep until it bumps its counter."""
    seq = m.load_u32(HB_SEQ)
    shown, text = _heartbeat_read(m)
    print(text, flush=True)
    while True:
        if not m.wait(HB_SEQ, seq, timeout=1.0):    # a second: notice a reader gone
            if _reader_gone():
                raise _ReaderGone
            continue
        new_seq = m.load_u32(HB_SEQ)
        if new_seq == seq:      # the wake of a beat printed already (see device_reader.py)
            continue
        seq = new_seq
        beat, text = _heartbeat_read(m)
        # A beat written after seq was read, whose own bump of seq is still
        # to come, is read (and shown) now: its bump then finds it shown.
        # 0: a module older than write_seq, which names no beat.
        if beat == shown and beat:
            continue
        shown = beat
        print(text, flush=True)


def _watch_poll(m: pymmapdev.Mapping, offset: int, length: int,
                interval: float) -> NoReturn:
    last = None
    while True:
        text = _text_at(m, offset, length)
        if text != last:
            print(text, flush=True)
            last = text
        elif _reader_gone():
            raise _ReaderGone
        time.sleep(interval)


def cmd_watch(args: argparse.Namespace) -> int:
    if _is_empty_file(args.path):   # open_file's "pass size=" is no option here
        raise ValueError(f"{args.path!r} is empty: nothing to watch yet")
    try:
        with _open(args.path, readonly=True, device_size=args.size) as m:
            if args.offset >= m.size:
                raise ValueError(f"offset {args.offset} is past the end of {args.path!r} "
                                 f"({m.size} bytes)")
            if m.waker == "mmapdev" and args.offset == 0 and \
                    _core.device_info(m.fileno())["heartbeat_ms"] > 0:
                _watch_heartbeat(m)
            else:
                _watch_poll(m, args.offset, args.length, args.interval)
    except KeyboardInterrupt:
        return 0


def _sysfs_attrs(fd: int) -> dict[str, str]:
    """The device's sysfs counters, found by its device number: a node may
    have any name (mknod, a symlink, a container's /dev)."""
    rdev = os.fstat(fd).st_rdev
    base = f"{_sysfs.SYS}/dev/char/{os.major(rdev)}:{os.minor(rdev)}"
    attrs = {}
    for attr in ("size", "maps", "events"):
        text = _sysfs.read_text(os.path.join(base, attr))
        if text is not None:
            attrs[attr] = text
    return attrs


def _info_uio(path: str) -> None:
    """A UIO device, from sysfs: nothing is mapped or read."""
    # a path, as info takes it: UIO() would take "uio0" or "x" for a name
    with pymmapdev.UIO(os.path.join(os.curdir, path), readonly=True) as u:
        base = _sysfs.uio_dir(u.device)
        print(f"path:      {u.path}")
        print(f"kind:      UIO device {u.device}")
        print(f"name:      {u.name} (version {u.version})")
        events = _sysfs.read_text(f"{base}/event")
        if events is not None:
            print(f"interrupts: {events} so far (wait_irq: pymmapdev.UIO({u.path!r}))")
        maps = _sysfs.uio_maps(u.device)
        if not maps:
            print("maps:      none")
        for m in maps:
            print(f"map {m.number}:     {m.size} bytes at {m.addr:#x}, offset {m.offset:#x} "
                  f"in its first page ({m.name or 'unnamed'}; "
                  f"UIO({u.path!r}).map({m.number}))")


def _info_pci_bar(path: str, bar: _sysfs.Bar) -> None:
    """A PCI BAR's resource file: where, how big, whose.  The BAR itself
    is not read: reading a register may have side effects."""
    ids = [_sysfs.read_text(f"{bar.device}/{f}") for f in ("vendor", "device")]
    driver = os.path.join(bar.device, "driver")
    bound = os.path.basename(os.readlink(driver)) if os.path.islink(driver) else "none"
    print(f"path:      {path}")
    print(f"kind:      PCI BAR {bar.number} of {bar.address} "
          f"(vendor {ids[0]}, device {ids[1]}, driver {bound})")
    print(f"size:      {bar.size} bytes ({bar.kind})")
    print(f"address:   {bar.start:#x} (also reachable through /dev/mem there)")
    print(f"map it:    pymmapdev.open_device({path!r})")


def _info_char(path: str, st: os.stat_result, cls: str | None) -> None:
    print(f"path:      {path}")
    print(f"kind:      character device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
          f" of class {cls or 'unknown'}")
    print("size:      unknown to sysfs: pymmapdev.open_device(path, size=...) maps it "
          "(write and watch: --size)")


def _info_file(st: os.stat_result) -> None:
    print(f"mode:      {stat.filemode(st.st_mode)}")
    print(f"allocated: {st.st_blocks * 512} bytes")


def _is_empty_file(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:                 # the open that follows names the error
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def cmd_info(args: argparse.Namespace) -> int:
    try:
        st = os.stat(args.path)
    except FileNotFoundError:
        if _is_device(args.path):       # raises, with the hint about the module
            pymmapdev.open_device(args.path, readonly=True).close()
        raise
    cls = _sysfs.char_class(st)
    bar = _sysfs.pci_bar_file(args.path) if stat.S_ISREG(st.st_mode) else None
    if cls == "uio":
        _info_uio(args.path)
        return 0
    if bar is not None:
        _info_pci_bar(args.path, bar)
        return 0
    resource = _sysfs.pci_resource_file(args.path) if stat.S_ISREG(st.st_mode) else None
    if resource is not None:        # never mapped as a file: reading registers has effects
        print(f"path:      {args.path}")
        print(f"kind:      PCI BAR {resource[1]} of {os.path.basename(resource[0])} "
              f"(not in {resource[0]}/resource: removed?)")
        print(f"size:      {st.st_size} bytes")
        return 0
    if stat.S_ISCHR(st.st_mode) and not _sysfs.is_mmapdev(st):
        _info_char(args.path, st, cls)
        return 0
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:    # nothing to map, nor any text
        print(f"path:      {args.path}")
        print("kind:      file")
        print("size:      0 bytes")
        _info_file(st)
        return 0
    with _open(args.path, readonly=True) as m:
        print(f"path:      {m.path}")
        print(f"kind:      {m.kind}")
        print(f"size:      {m.size} bytes")
        print(f"page size: {pymmapdev.PAGESIZE}")
        if m.waker == "mmapdev":          # the GET_INFO ioctl is for our devices only
            info = _core.device_info(m.fileno())
            print(f"abi:       {info['abi_version']}")
            print(f"heartbeat: {info['heartbeat_ms']} ms")
            sysfs = _sysfs_attrs(m.fileno())
            labels = {"size": ("buffer", "bytes in the device"), "maps": ("maps", "live mappings"),
                      "events": ("events", "wake-ups and heartbeats")}
            for key, value in sysfs.items():
                label, meaning = labels[key]
                print(f"{label + ':':<10} {value} ({meaning}, sysfs)")
        elif m.kind == "file":
            _info_file(os.fstat(m.fileno()))
        print(f"text:      {_text_at(m, 0, 64)!r}")
    return 0


# ---- kmod -------------------------------------------------------------------

def cmd_kmod(args: argparse.Namespace) -> int:
    from . import _kmod     # only this command needs it
    try:
        kdir = _kmod.kernel_dir(args.kernel_dir)
        release = _kmod.release_of(kdir)
        if args.action == "build":
            ko = _kmod.build(kdir, args.build_dir and Path(args.build_dir))
            print(f"built {ko} for kernel {release}")
            print(f"load it: sudo insmod {ko}   (or: python -m pymmapdev kmod install)")
        elif args.action == "install":
            dest = _kmod.install(kdir, args.build_dir and Path(args.build_dir), args.root)
            print(f"installed {dest} for kernel {release}")
            print("load it: sudo modprobe mmapdev   (parameters and the udev rule: "
                  f"{_kmod.sources() / 'README.md'})")
        else:
            name = _kmod.dkms(kdir)
            print(f"registered {name} with DKMS and installed it for kernel {release}")
    except _kmod.KmodError as exc:
        print(f"pymmapdev kmod: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


_SIZE_HELP = ("bytes of a character device to map, from its start, for one that cannot tell "
              "its size (/dev/mem, a UIO node); mmapdev devices tell theirs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pymmapdev",
                                     description="Shared memory from the command line.")
    parser.add_argument("--version", action="version",
                        version=f"pymmapdev {pymmapdev.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a writer and a reader process share one file")
    demo.add_argument("--path", type=_nonempty, help="file to share (default: a fresh one in /dev/shm)")
    demo.add_argument("--count", type=_int_from(1), default=10, help="updates to make (default 10)")
    demo.add_argument("--interval", type=_seconds, default=0.2, help="seconds between updates")
    demo.set_defaults(func=cmd_demo)

    write = sub.add_parser("write", help="write TEXT into PATH (a file or an mmapdev device)")
    write.add_argument("path")
    write.add_argument("text")
    write.add_argument("--offset", type=_int_from(0), default=0)
    write.add_argument("-n", "--no-newline", action="store_true")
    write.add_argument("--size", type=_int_from(1), metavar="BYTES", help=_SIZE_HELP)
    write.set_defaults(func=cmd_write)

    watch = sub.add_parser("watch", help="print the text at the start of PATH when it changes")
    watch.add_argument("path")
    watch.add_argument("--offset", type=_int_from(0), default=0)
    watch.add_argument("--length", type=_int_from(1), default=256)
    watch.add_argument("--interval", type=_seconds, default=0.05, help="poll interval for files")
    watch.add_argument("--size", type=_int_from(1), metavar="BYTES", help=_SIZE_HELP)
    watch.set_defaults(func=cmd_watch)

    info = sub.add_parser("info", help="describe a file, an mmapdev device (sysfs counters), "
                          "a UIO device or a PCI BAR resource file")
    info.add_argument("path")
    info.set_defaults(func=cmd_info)

    kmod = sub.add_parser("kmod", help="build or install the bundled mmapdev kernel module",
                          description="build: compile mmapdev.ko; install: build, copy it to "
                          "/lib/modules/<release>/extra and run depmod (root); dkms: register "
                          "the sources with DKMS, rebuilt for every new kernel (root)")
    kmod.add_argument("action", choices=["build", "install", "dkms"])
    kmod.add_argument("--kernel-dir", type=_nonempty, metavar="DIR",
                      help="kernel build directory (default: /lib/modules/$(uname -r)/build)")
    kmod.add_argument("--build-dir", type=_nonempty, metavar="DIR",
                      help="where to build: a new or empty directory, or one an earlier build "
                      "filled (default: ~/.cache/pymmapdev/kmod/<release>; install: a private "
                      "temporary directory)")
    kmod.add_argument("--root", type=_nonempty, default="/", metavar="DIR",
                      help="install: stage under DIR instead of / (like INSTALL_MOD_PATH)")
    kmod.set_defaults(func=cmd_kmod)
    return parser


def _stdout_usable() -> bool:
    """False when the command was started with stdout closed (`>&-`):
    Python then makes sys.stdout None and print() drops every line."""
    if sys.stdout is None:
        return False
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):   # no descriptor (a StringIO, pytest's capture)
        return True
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _silence_stdout() -> None:
    """After EPIPE: what is still buffered must not fail again at exit
    ("Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "write" and not _stdout_usable():
        print(f"pymmapdev {args.command}: standard output is closed: nothing could be "
              f"printed", file=sys.stderr)
        return 1
    try:
        status: int = args.func(args)
        sys.stdout.flush()              # a closed pipe shows here, not at exit
        return status
    except KeyboardInterrupt:
        return 130                              # as the shell reports a Ctrl-C
    except _ReaderGone:
        return 141                              # as the shell reports a SIGPIPE
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except (OSError, ValueError) as exc:
        print(f"pymmapdev: {_one_line(exc)}", file=sys.stderr)
        return 1

