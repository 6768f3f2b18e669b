"""Constructors: turn a path into a Mapping.

Opening, sizing and error translation happen here in Python, where ``os``
already attaches errno and the path to every OSError; the C type only maps
the descriptor it is given (and keeps its own dup of it).
"""
from __future__ import annotations

import errno
import operator
import os
import stat

from . import _core, _sysfs

PAGESIZE = _core.PAGESIZE

_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
MAX_OFFSET = 2**63 - 1             # off_t's: mmap() takes no offset past it
MEMFD_NAME_MAX = 249               # memfd_create(2): 255 for "memfd:" and the name
# Every open(2) of a path to map (see _open()); _pickle's re-open too.
OPEN_FLAGS = os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def _checked_size(size, what="size"):
    size = operator.index(size)
    if size <= 0:
        raise ValueError(f"{what} must be positive, not {size}")
    return size


def _checked_mode(mode):
    mode = operator.index(mode)
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode {mode:#o} is not a permission mode: only the bits of 0o777 are "
                         f"allowed (no setuid, setgid, sticky or file type bits)")
    return mode


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"


def _lowest_limit(directory, path, name):
    """The lowest limit in file *name* of cgroup *path* and of every cgroup
    above it (a parent's limit binds its children), or None."""
    limits = []
    while True:
        limits.append(_read_int(f"{directory}{path}/{name}"))
        if path in ("", "/"):
            break
        path = os.path.dirname(path)
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def _cgroup_memory_limit():
    """The memory limit of this process's cgroup (v2 or v1) and of those
    above it, or None."""
    try:
        with open(PROC_SELF_CGROUP) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":                                   # v2
            limits.append(_lowest_limit(CGROUP_ROOT, path, "memory.max"))
        elif "memory" in controllers.split(","):                # v1
            limits.append(_lowest_limit(f"{CGROUP_ROOT}/memory", path,
                                        "memory.limit_in_bytes"))
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def _memory_limit():
    """Bytes of shared memory this process could ever back: RAM + swap, or
    its cgroup's limit when lower."""
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) * 1024
    limit = fields.get("MemTotal", 0) + fields.get("SwapTotal", 0)
    cgroup = _cgroup_memory_limit()
    return min(limit, cgroup) if cgroup else limit


def _check_memory(fd, path, current, size, memory_backed):
    """Refuse sizes that memory-backed files (tmpfs, memfd) cannot hold.

    Reserving them would fill memory until the OOM killer steps in, and it
    may kill other processes before ours: fail before allocating anything.
    """
    is_tmpfs, available = _core.fs_space(fd)
    if not (memory_backed or is_tmpfs):
        return
    limit = _memory_limit()
    if size > limit:
        raise OSError(errno.ENOMEM, f"cannot back {size} bytes with memory: this machine "
                      f"has {limit} bytes of RAM + swap (or a cgroup limit) in all", path)
    if is_tmpfs and available is not None and size - current > available:
        raise OSError(errno.ENOSPC, f"cannot reserve {size} bytes: the tmpfs holding the "
                      f"file has {available} bytes free", path)


def _reserve(fd, path, allocated, size, memory_backed=False):
    """Reserve the blocks of the first *size* bytes, extending the file.

    posix_fallocate both extends the file and reserves its blocks, holes
    included, so a full disk or tmpfs fails here with ENOSPC instead of a
    SIGBUS at the first write.  It never shrinks the file, unlike
    ftruncate, which matters when two processes create the same file with
    different sizes at once.
    """
    _check_memory(fd, path, allocated, size, memory_backed)
    # The file system cannot reserve blocks: extend sparsely, and only if
    # nobody has grown the file past size in the meantime.
    if not _fallocate(fd, path, 0, size) and os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)


def _fallocate(fd, path, offset, length):
    """posix_fallocate(); False where the file system cannot reserve blocks,
    OSError (ENOSPC...) naming *path* where it refuses."""
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in _NO_FALLOCATE:
            raise OSError(exc.errno, f"cannot reserve {length} bytes: {exc.strerror}",
                          path) from None
        return False
    return True


def map_file_range(path, offset, length):
    """[offset, offset + length) of the regular file *path*, blocks reserved,
    if the file already holds those bytes; else None (open_file() then
    creates or extends it).

    Not open_file(path): a writable mapping of a whole file reserves every
    hole in it, so a few bytes written into a sparse disk image would
    allocate all of it (or fail on a disk with less free)."""
    path = _str_path(path)
    try:
        fd = _open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _file_type_error(path, st)
        if st.st_size < offset + length:
            return None
        _fallocate(fd, path, offset, length)    # a hole on a full disk: ENOSPC, no SIGBUS
        return _core.Mapping(fd, length, offset, kind="file", path=path)
    finally:
        os.close(fd)


_MAX_LINKS = 40                    # the kernel's MAXSYMLINKS
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _refuse_planted_symlink(dirfd, name, path):
    """Refuse to follow the symlink *name* in the directory open as *dirfd*
    if fs.protected_symlinks=1 would not follow it: one in a sticky
    world-writable directory (/tmp, /dev/shm) owned neither by us nor by the
    directory's owner, i.e. planted by another user to make us create or
    open a file of their choosing."""
    link = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    directory = os.fstat(dirfd)
    sticky_world_writable = (directory.st_mode & stat.S_ISVTX and
                             directory.st_mode & stat.S_IWOTH)
    if (sticky_world_writable and link.st_uid != os.geteuid() and
            link.st_uid != directory.st_uid):
        raise PermissionError(
            errno.EACCES, f"refusing to follow a symlink owned by uid {link.st_uid} in a "
            f"sticky world-writable directory (what fs.protected_symlinks=1 refuses: "
            f"another user may have planted it)", path)


def _in_procfs(dirfd):
    """Is the directory open as *dirfd* in this process's /proc?"""
    try:                            # /proc/self: only a mounted procfs has it
        return os.fstat(dirfd).st_dev == os.lstat("/proc/self").st_dev
    except OSError:                 # no /proc
        return False


def _open_walking(path, flags, mode):
    """_walk_and_open(), its errors named by the path given, not by the
    component that failed."""
    try:
        return _walk_and_open(path, flags, mode)
    except OSError as exc:
        if exc.filename == path:
            raise
        error = type(exc)(exc.errno, exc.strerror, path)
    raise error                     # outside the except clause: not chained


def _walk_and_open(path, flags, mode):
    """open(2) of *path*, its walk done here one component at a time so that
    every symlink on the way is checked, as fs.protected_symlinks checks
    each (a planted link to a directory, or a link of ours to a planted
    one, is as dangerous as a planted last component).  Each step is
    relative to the directory already reached (O_PATH descriptors), so
    nothing can be swapped between a check and the step it allows."""
    if not path:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    must_be_dir = path.endswith("/")
    dirfd = os.open("/" if path.startswith("/") else ".", _PATH_FLAGS | os.O_DIRECTORY)
    links = 0
    try:
        while True:
            if not parts:           # "/", "dir/", ".": the directory itself
                if must_be_dir and not stat.S_ISDIR(os.fstat(dirfd).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                return os.open(".", flags & ~os.O_CREAT, mode, dir_fd=dirfd)
            name = parts.pop(0)
            last = not parts and not must_be_dir
            try:
                if last:
                    return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=dirfd)
                fd = os.open(name, _PATH_FLAGS, dir_fd=dirfd)
            except OSError as exc:
                # a symlink: ELOOP; EACCES for O_CREAT of another user's
                # link in a sticky directory (the kernel's own refusal)
                if exc.errno not in (errno.ELOOP, errno.EACCES) or not last:
                    raise
                fd = os.open(name, _PATH_FLAGS, dir_fd=dirfd)
                if not stat.S_ISLNK(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                os.close(dirfd)
                dirfd = fd
                continue
            os.close(fd)
            if _in_procfs(dirfd):
                # A magic link (/proc/PID/fd/N, /proc/PID/cwd): its text is
                # no path to what it names, the kernel alone follows it.
                # Nothing is planted in /proc: it has no sticky directory.
                if last:
                    return os.open(name, flags, mode, dir_fd=dirfd)
                fd = os.open(name, _PATH_FLAGS & ~os.O_NOFOLLOW, dir_fd=dirfd)
                os.close(dirfd)
                dirfd = fd
                continue
            _refuse_planted_symlink(dirfd, name, path)
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(name, dir_fd=dirfd)
            if target.endswith("/") and not parts:       # "link -> dir/", last
                must_be_dir = True
            parts[:0] = [part for part in target.split("/") if part not in ("", ".")]
            if target.startswith("/"):
                os.close(dirfd)
                dirfd = os.open("/", _PATH_FLAGS | os.O_DIRECTORY)
    finally:
        os.close(dirfd)


def _open(path, flags, mode=0o600):
    """os.open without following a planted symlink and without blocking.

    O_NONBLOCK: opening a FIFO for reading would wait for a writer (the
    type is checked right after, and a FIFO refused); the flag is cleared
    again for devices.  O_NOCTTY: a tty opened by a process without a
    controlling terminal would become its controlling terminal.
    """
    return _open_walking(path, flags | OPEN_FLAGS, mode)


def in_dev_filesystem(path):
    """Whether *path* names an entry of the /dev file system itself: the
    devtmpfs of device nodes, not /dev/shm or /dev/hugepages (mounts of
    their own, for files), and nothing when /dev is no mount of its own."""
    try:
        dev = os.stat("/dev").st_dev
        if dev == os.stat("/").st_dev:
            return False
        # the directory as the kernel reaches it: 'link/..' is link's
        # target's parent, which abspath() would fold away as text
        return os.stat(os.path.dirname(path) or ".").st_dev == dev
    except OSError:
        return False


def _blocking(fd):
    os.set_blocking(fd, True)


def _file_type_error(path, st):
    if stat.S_ISDIR(st.st_mode):
        return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if stat.S_ISCHR(st.st_mode):
        return ValueError(f"{path} is a character device: use open_device()")
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
        "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
    return ValueError(f"{path} is {kind} and cannot be mapped")


def _str_path(path):
    """A path argument as str (bytes decoded as os does), refused with its
    name if the kernel could not take it."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\0" in path:
        raise ValueError(f"the path contains a NUL byte, which no file name can: {path!r}")
    return path


READ_ONLY_ADVICE = "pass readonly=True to map it read-only"


def open_file(path, size=None, *, create=True, readonly=False, mode=0o600,
              populate=False):
    """Map *path* MAP_SHARED and return a :class:`Mapping`.

    The file is created (with *mode*, less the umask, as by open(2)) if
    missing and *create* is true, and extended to *size* bytes with its
    blocks reserved if shorter; a longer file is never shrunk.
    ``size=None`` maps the whole existing file and creates none (a missing
    file is FileNotFoundError, an empty one ValueError).
    """
    return open_file_checked(path, size, create=create, readonly=readonly, mode=mode,
                             populate=populate)


def open_file_checked(path, size=None, *, create=True, readonly=False, mode=0o600,
                      populate=False, check_head=None, head_size=0,
                      read_only_advice=READ_ONLY_ADVICE):
    """open_file(), calling *check_head* with the first *head_size* bytes of
    an existing file before it is extended: what it raises refuses the
    file, which is then left as it was (open_channel: an earlier run's
    channel of another capacity must not grow before it is refused).
    *read_only_advice* ends the PermissionError of a file that may be
    read, not written, opened writable."""
    path = _str_path(path)
    if size is not None:
        size = _checked_size(size)
        if size > MAX_OFFSET:      # posix_fallocate would raise OverflowError
            raise ValueError(f"size {size} is past the largest file offset ({MAX_OFFSET}) "
                             f"({path})")
    mode = _checked_mode(mode)
    # size=None maps what is there: a file this call created would be
    # empty, refused, and unlinked again -- by then perhaps the file of a
    # writer that opened it meanwhile.  So nothing is created.
    may_create = create and size is not None
    try:
        fd, created = _open_for_mapping(path, readonly, may_create, mode)
    except FileNotFoundError as exc:
        if not create or size is not None or exc.strerror != os.strerror(errno.ENOENT) \
                or not os.path.isdir(os.path.dirname(path) or "."):
            raise
        error = FileNotFoundError(exc.errno, f"{exc.strerror}: size=None maps an existing "
                                  f"file: pass size= to create it", path)
        raise error from None
    except OSError as exc:
        if readonly or not _readable_only(exc, path):
            raise
        raise type(exc)(exc.errno, f"{exc.strerror}: it may be read, not written: "
                        f"{read_only_advice}", path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _file_type_error(path, st)
        if size is None:
            if st.st_size == 0:
                raise ValueError(f"{path} is empty: pass size= to give it a size")
            size = st.st_size
        elif st.st_size < size and readonly:
            raise ValueError(
                f"{path} has {st.st_size} bytes, fewer than size={size}: a read-only "
                f"mapping cannot extend it (open it writable or pass a smaller size)")
        # not a file this call created: what is in it is a concurrent
        # creator's, whose file a refusal here would unlink (below)
        if check_head is not None and not created and st.st_size < size:
            check_head(os.pread(fd, head_size, 0))
        if not readonly:
            _reserve(fd, path, st.st_blocks * 512, size)
        return _core.Mapping(fd, size, 0, readonly=readonly, kind="file", path=path,
                             populate=populate)
    except BaseException:
        if created:                 # a refused size leaves no empty file behind
            _unlink_if_same(path, fd)
        raise
    finally:
        os.close(fd)


def _open_for_mapping(path, readonly, create, mode):
    """(fd, whether this call created the file) for open_file()."""
    flags = os.O_RDONLY if readonly else os.O_RDWR
    if in_dev_filesystem(path):     # devices only: never create a file there
        try:
            return _open(path, flags, mode), False
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                exc.errno, f"{exc.strerror}: /dev holds devices, and open_file() does not "
                f"create files there (a device whose driver is not loaded? map devices "
                f"with open_device())", path) from None
    if not create or readonly:
        return _open(path, flags, mode), False
    try:                            # O_EXCL: did this call create it?
        return _open(path, flags | os.O_CREAT | os.O_EXCL, mode), True
    except FileExistsError:         # (or a symlink: the usual checks)
        pass
    # outside the except clause: an error here is not chained to that one
    return _open(path, flags | os.O_CREAT, mode), False


def _readable_only(exc, path):
    """Whether a writable open failed only because the file may not be
    written (mode bits, a read-only file system), not for a reason of ours."""
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or \
            exc.strerror != os.strerror(exc.errno):   # e.g. a planted symlink refused
        return False
    effective = os.access in os.supports_effective_ids
    return os.path.isfile(path) and os.access(path, os.R_OK, effective_ids=effective)


def _unlink_if_same(path, fd):
    """Remove *path* if it still names the file open as *fd*."""
    try:
        st, now = os.fstat(fd), os.lstat(path)
        if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
            os.unlink(path)
    except OSError:
        pass


def anonymous(size, *, name="pymmapdev"):
    """Shared memory with no path: a memfd, shared with children by fork or
    by passing ``m.fileno()`` (e.g. over a UNIX socket)."""
    size = _checked_size(size)
    if isinstance(name, (str, bytes)) and len(os.fsencode(name)) > MEMFD_NAME_MAX:
        raise ValueError(f"name must be at most {MEMFD_NAME_MAX} bytes (memfd_create's "
                         f"limit), not {len(os.fsencode(name))}: {name!r}")
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        _reserve(fd, None, 0, size, memory_backed=True)
        return _core.Mapping(fd, size, 0, kind="file", path=None)
    finally:
        os.close(fd)


def _device_open_error(exc, path):
    """open(2) of a device failed: say what usually helps."""
    mmapdev = os.path.basename(path).startswith("mmapdev")
    if isinstance(exc, FileNotFoundError) and mmapdev:
        return FileNotFoundError(
            exc.errno, f"{exc.strerror} (is the mmapdev module loaded? sudo modprobe "
            f"mmapdev, once python -m pymmapdev kmod build and kmod install made it; "
            f"in a source tree: insmod kmod/mmapdev.ko)", path)
    if isinstance(exc, PermissionError):
        hint = ("the node's permissions come from the module's mode= parameter or the udev "
                "rule kmod/99-mmapdev.rules; join its group" if mmapdev else
                "device memory usually needs root, or a udev rule granting your group access")
        return PermissionError(exc.errno, f"{exc.strerror} ({hint})", path)
    return OSError(exc.errno, exc.strerror, path)


def _device_limits(fd, path, st):
    """(bytes the device has or None if it cannot say, how sleepers wake,
    what the bytes are called) for an open device."""
    if stat.S_ISREG(st.st_mode):
        resource = _sysfs.pci_resource_file(path)
        if resource is None:
            raise ValueError(f"{path} is a regular file, not a device: use open_file()")
        # sysfs sizes a resource file as its BAR (its device's resource
        # listing is not needed, nor read: it may be gone already)
        device, number = resource
        return st.st_size, "poll", f"PCI BAR {number} of {os.path.basename(device)}"
    if not stat.S_ISCHR(st.st_mode):
        raise _file_type_error(path, st)
    if not _sysfs.is_mmapdev(st):       # no ioctl to a driver that is not ours
        return None, "poll", _sysfs.char_class(st)
    _blocking(fd)
    try:
        info = _core.device_info(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} (the mmapdev device did not answer "
                      f"MMAPDEV_IOC_GET_INFO)", path) from None
    return info["size"], "mmapdev", "the device buffer"


def open_device(path="/dev/mmapdev0", size=None, *, offset=0, readonly=False):
    """Map [offset, offset + size) of a device and return a :class:`Mapping`.

    Any device that can be mmap()ed: an mmapdev device (the kernel module in
    ``kmod/``; *size* defaults to the rest of its buffer), a PCI BAR through
    its sysfs ``resourceN`` file (to the rest of the BAR), and any other
    character device, UIO and ``/dev/mem`` included, with an explicit
    *size*.  *offset* may be anywhere: the pages holding the range are
    mapped and the Mapping covers exactly that range (``m.offset`` is
    *offset*, ``m[0]`` its first byte).  A driver that refuses the mapping
    raises its errno with the path.
    """
    path = _str_path(path)
    offset = operator.index(offset)
    if offset < 0:
        raise ValueError(f"offset {offset} is negative ({path})")
    if size is not None:
        size = _checked_size(size)
    try:
        fd = _open(path, os.O_RDONLY if readonly else os.O_RDWR)
    except (FileNotFoundError, PermissionError) as exc:
        raise _device_open_error(exc, path) from None
    try:
        return map_device_fd(fd, path, size, offset, readonly)
    finally:
        os.close(fd)


def map_device_fd(fd, path, size, offset, readonly):
    """open_device() after open(2): map the device open as *fd* (named
    *path* in messages; the Mapping keeps its own dup of *fd*)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise _file_type_error(path, st)
    limit, waker, what = _device_limits(fd, path, st)
    if limit is not None:
        if offset >= limit:
            raise ValueError(f"offset {offset} is outside {what} of {limit} bytes ({path})")
        if size is None:
            size = limit - offset
        elif size > limit - offset:
            raise ValueError(f"offset {offset} + size {size} is outside {what} of "
                             f"{limit} bytes ({path})")
    elif size is None:
        hint = " (for a UIO device, pymmapdev.UIO(path).map(i) knows)" if what == "uio" \
            else ""
        raise ValueError(f"{path}: pass size=: the size of a mapping of this device cannot "
                         f"be discovered (mmapdev devices and PCI resource files tell "
                         f"theirs){hint}")
    if offset + size > MAX_OFFSET:
        raise ValueError(f"offset {offset} + size {size} is past the largest file offset "
                         f"({MAX_OFFSET}) ({path})")
    _blocking(fd)
    try:
        return _core.Mapping(fd, size, offset, readonly=readonly, kind="device", path=path,
                             waker=waker)
    except OSError as exc:
        raise type(exc)(exc.errno, f"{exc.strerror} (the driver refused to map offset "
                        f"{offset} + {size} bytes)", path) from None
