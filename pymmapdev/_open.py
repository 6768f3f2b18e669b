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
# open(2) of an O_TMPFILE where the file system has none (EOPNOTSUPP), or
# where the kernel knows no O_TMPFILE (EISDIR: its O_DIRECTORY part alone)
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
# link(2) where the file system has no hard links (vfat: EPERM; FUSE ones)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS}
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
        try:
            os.ftruncate(fd, size)
        except OSError as exc:          # EFBIG, ENOSPC, EIO: it names no file
            raise OSError(exc.errno, f"cannot extend the file to {size} bytes: "
                          f"{exc.strerror}", path) from None


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
        _check_regular(path, st)
        if st.st_size < offset + length:
            return None
        _fallocate(fd, path, offset, length)    # a hole on a full disk: ENOSPC, no SIGBUS
        return _map_file(fd, path, length, offset)
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


PROTECTED_REGULAR = "/proc/sys/fs/protected_regular"


def _refuse_planted_file(dirfd, fd, path):
    """The existing file open as *fd* in the directory open as *dirfd*,
    unless fs.protected_regular refuses it (and *fd* is closed): a regular
    file in a sticky directory others may write (world; group too at 2),
    owned neither by us nor by the directory's owner -- planted by another
    user for us to write into.  The kernel judges open(O_CREAT) only, which
    open_file() no longer passes for an existing file (it makes a new one
    unnamed), so it is judged here, as the sysctl says."""
    try:
        level = _read_int(PROTECTED_REGULAR) or 0
        st, directory = os.fstat(fd), os.fstat(dirfd)
        others_write = stat.S_IWOTH | (stat.S_IWGRP if level >= 2 else 0)
        planted = (level and stat.S_ISREG(st.st_mode) and directory.st_mode & stat.S_ISVTX
                   and directory.st_mode & others_write
                   and st.st_uid not in (os.geteuid(), directory.st_uid))
    except BaseException:
        os.close(fd)
        raise
    if not planted:
        return fd
    os.close(fd)
    raise PermissionError(
        errno.EACCES, f"refusing to write a file owned by uid {st.st_uid} in a sticky "
        f"directory others may write (what fs.protected_regular={level} refuses: another "
        f"user may have planted it)", path)


def _in_procfs(dirfd):
    """Is the directory open as *dirfd* in this process's /proc?"""
    try:                            # /proc/self: only a mounted procfs has it
        return os.fstat(dirfd).st_dev == os.lstat("/proc/self").st_dev
    except OSError:                 # no /proc
        return False


def _open_walking(path, flags, mode, complete=None):
    """_walk_and_open(), its errors named by the path given, not by the
    component that failed."""
    try:
        return _walk_and_open(path, flags, mode, complete)
    except OSError as exc:
        if exc.filename == path:
            raise
        error = type(exc)(exc.errno, exc.strerror, path)
    raise error                     # outside the except clause: not chained


def _walk_and_open(path, flags, mode, complete=None):
    """open(2) of *path*, its walk done here one component at a time so that
    every symlink on the way is checked, as fs.protected_symlinks checks
    each (a planted link to a directory, or a link of ours to a planted
    one, is as dangerous as a planted last component).  Each step is
    relative to the directory already reached (O_PATH descriptors), so
    nothing can be swapped between a check and the step it allows.

    With *complete*, a missing file is made in the directory reached (see
    _make_at()) and what complete() made of it is returned, or _LOST."""
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
                return os.open(".", flags, mode, dir_fd=dirfd)
            name = parts.pop(0)
            last = not parts and not must_be_dir
            try:
                if last:
                    fd = _open_last(name, flags | os.O_NOFOLLOW, mode, dirfd, path)
                    if complete is None:
                        return fd
                    return _refuse_planted_file(dirfd, fd, path)
                fd = os.open(name, _PATH_FLAGS, dir_fd=dirfd)
            except FileNotFoundError:
                if not last or complete is None:
                    raise
                fd = None           # to be made, below: its errors not chained to this
            except OSError as exc:
                if exc.errno != errno.ELOOP or not last:     # O_NOFOLLOW of a symlink
                    raise
                fd = os.open(name, _PATH_FLAGS, dir_fd=dirfd)
                if not stat.S_ISLNK(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise
            if fd is None:
                return _make_at(dirfd, name, flags, mode, complete)
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
                    return _open_last(name, flags, mode, dirfd, path)
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


def _open_last(name, flags, mode, dirfd, path):
    """open(2) of the last component *name* in the directory open as *dirfd*.
    A socket cannot be opened (ENXIO, "No such device or address", which
    names nothing wrong with the path): it is refused as the FIFO is."""
    try:
        return os.open(name, flags, mode, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        try:
            st = os.stat(name, dir_fd=dirfd)
        except OSError:
            raise exc from None
        if not stat.S_ISSOCK(st.st_mode):
            raise
    raise _file_type_error(path, st)


_LOST = object()                   # _make_at(): another creator linked its file first


def _make_at(dirfd, name, flags, mode, complete):
    """Make the file *name* in the directory open as *dirfd*: complete(fd)
    makes it whole (sized, blocks reserved, mapped) while it has no name
    there, and only then is it linked at *name*.  Returns what complete()
    returned, or _LOST if another creator linked a file there first.

    A concurrent opener of the path thus finds either no file or the whole
    file: never an empty or partly grown one, and never one a failure here
    (ENOSPC, a KeyboardInterrupt) removes from under it, leaving it mapping
    an orphan while the next opener creates another file at the path."""
    temp = None
    try:
        fd = _open_unnamed(dirfd, flags, mode)
        if fd is None:              # no O_TMPFILE: a name nobody else can know
            temp = f".pymmapdev-{os.urandom(16).hex()}"
            fd = os.open(temp, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode,
                         dir_fd=dirfd)
        try:
            made = complete(fd)
            try:
                linked = _link_at(fd, dirfd, temp, name)
            except BaseException:
                made.close()
                raise
        finally:
            os.close(fd)
    finally:
        if temp is not None:        # whatever happened: linked, lost or failed
            _unlink_quietly(temp, dirfd)
    if linked:
        return made
    made.close()
    return _LOST


def _open_unnamed(dirfd, flags, mode):
    """An unnamed new file (O_TMPFILE) in the directory open as *dirfd*, or
    None where there is none to be had: the file system or kernel has no
    O_TMPFILE, or no /proc is there to link one by."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = os.open(".", flags | os.O_TMPFILE, mode, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno not in _NO_TMPFILE:
            raise
        return None
    try:
        exact = _umask_applied(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    if not exact:                   # a named file is made as open(2) makes it
        os.close(fd)
        return None
    return fd


def _umask_applied(fd, mode):
    """Whether the new file open as *fd* has no permission bit open(2)'s
    umask would have cleared from *mode*: kernels before 6.0 (and ZFS)
    left the umask out of an O_TMPFILE on file systems without POSIX ACLs."""
    umask = _umask()
    return umask is not None and not os.fstat(fd).st_mode & 0o777 & ~(mode & ~umask)


_PROC_SELF_STATUS = "/proc/self/status"


def _umask():
    """This process's umask (read, not set: os.umask() would change it for
    every thread meanwhile), or None if /proc does not say it."""
    try:
        with open(_PROC_SELF_STATUS) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _link_at(fd, dirfd, temp, name):
    """Link the new file open as *fd* (an O_TMPFILE, or named *temp* in the
    directory open as *dirfd*) at *name* there: False if a file is there."""
    try:
        if temp is None:            # linkat(AT_EMPTY_PATH) needs privilege: /proc's does not
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dirfd, follow_symlinks=True)
        else:
            try:
                os.link(temp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                return _rename_if_absent(dirfd, temp, name)
    except FileExistsError:
        return False
    return True


def _rename_if_absent(dirfd, temp, name):
    """link(2)'s stand-in where the file system has no hard links (vfat,
    some FUSE ones): rename(2) would replace a file that is there, so one is
    looked for first.  A creator whose file appears between the look and
    the rename loses it to ours: the window link(2) closes stays open
    here, a few microseconds wide."""
    try:
        os.lstat(name, dir_fd=dirfd)
    except FileNotFoundError:
        os.rename(temp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        return True
    return False


def _unlink_quietly(name, dirfd):
    try:
        os.unlink(name, dir_fd=dirfd)
    except OSError:
        pass


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


def _check_regular(path, st):
    """Refuse what open_file() and map_file_range() cannot map as a file:
    not a regular file, or a PCI BAR's sysfs resource file, which sysfs
    shows as one (sized as the BAR) though it is device memory: never to
    be grown, truncated or reserved, nor slept on with a futex."""
    if not stat.S_ISREG(st.st_mode):
        raise _file_type_error(path, st)
    if _sysfs.pci_resource_file(path) is not None:
        raise ValueError(f"{path!r} is a PCI BAR's sysfs resource file: map it with "
                         f"open_device() (sized by the BAR)")


def _file_type_error(path, st):
    if stat.S_ISDIR(st.st_mode):
        return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if stat.S_ISCHR(st.st_mode):
        return ValueError(f"{path!r} is a character device: use open_device()")
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
        "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
    return ValueError(f"{path!r} is {kind} and cannot be mapped")


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
    blocks reserved if shorter; a longer file is never shrunk.  A new file
    appears at *path* only once whole: a concurrent opener finds none, or
    all of it, and a call that fails leaves none.
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
                             f"({path!r})")
    mode = _checked_mode(mode)
    # size=None maps what is there: a file this call created would be
    # empty, and refused.  So nothing is created.
    may_create = create and size is not None

    def complete(fd):               # a new file, before it is linked at path
        return _map_opened(fd, path, size, readonly, populate)
    try:
        fd, made = _open_for_mapping(path, readonly, may_create, mode, complete)
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
    if made is not None:
        return made
    try:
        return _map_opened(fd, path, size, readonly, populate, check_head, head_size)
    finally:
        os.close(fd)


def _map_opened(fd, path, size, readonly, populate, check_head=None, head_size=0):
    """Map the file open as *fd* for open_file_checked(), reserving its
    blocks first; *check_head* judges an existing file before it grows."""
    st = os.fstat(fd)
    _check_regular(path, st)
    if st.st_size < (size or 1) and _made_as_read(st):
        raise _unmappable_file_error(path)      # neither "empty" nor to be grown
    if size is None:
        if st.st_size == 0:
            raise ValueError(f"{path!r} is empty: pass size= to give it a size")
        size = st.st_size
    elif st.st_size < size and readonly:
        raise ValueError(
            f"{path!r} has {st.st_size} bytes, fewer than size={size}: a read-only "
            f"mapping cannot extend it (open it writable or pass a smaller size)")
    if check_head is not None and st.st_size < size:
        check_head(os.pread(fd, head_size, 0))
    if not readonly:
        _reserve(fd, path, st.st_blocks * 512, size)
    return _map_file(fd, path, size, 0, readonly=readonly, populate=populate)


def _map_file(fd, path, size, offset, readonly=False, populate=False):
    """The Mapping of a regular file; a file system that maps no files
    (mmap's ENODEV: /proc, /sys) refused as the FIFO is."""
    try:
        return _core.Mapping(fd, size, offset, readonly=readonly, kind="file", path=path,
                             populate=populate)
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise
    raise _unmappable_file_error(path)


# Entries only a mounted procfs and sysfs have: an unmounted /proc is an
# empty directory of the root file system, whose files are no such thing.
_MADE_AS_READ_MARKS = ("/proc/self", "/sys/kernel")
_ROOT = "/"


def _made_as_read(st):
    """Whether the file of *st* is one of /proc or /sys, whose contents are
    made as they are read (most report 0 bytes, or a page)."""
    try:
        root = os.stat(_ROOT).st_dev
    except OSError:
        return False
    for mark in _MADE_AS_READ_MARKS:
        try:
            dev = os.lstat(mark).st_dev
        except OSError:
            continue
        if dev == st.st_dev and dev != root:
            return True
    return False


def _unmappable_file_error(path):
    return ValueError(f"{path!r} is on a file system whose files cannot be mapped (/proc and "
                      f"/sys, whose contents are made as they are read, are)")


_CREATE_ATTEMPTS = 8                # creators and removers of the path racing ours


def _open_for_mapping(path, readonly, create, mode, complete):
    """(fd, None) of the existing file *path* for open_file(), or with
    *create* and no file there, (None, what complete(fd) made of a new file
    before it was linked at *path*)."""
    flags = os.O_RDONLY if readonly else os.O_RDWR
    if in_dev_filesystem(path):     # devices only: never create a file there
        try:
            return _open(path, flags, mode), None
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                exc.errno, f"{exc.strerror}: /dev holds devices, and open_file() does not "
                f"create files there (a device whose driver is not loaded? map devices "
                f"with open_device())", path) from None
    if not create or readonly:
        return _open(path, flags, mode), None
    for _ in range(_CREATE_ATTEMPTS):
        opened = _open_walking(path, flags | OPEN_FLAGS, mode, complete)
        if isinstance(opened, int):
            return opened, None
        if opened is not _LOST:
            return None, opened
        # another creator linked its file first: open that one
    raise OSError(errno.EAGAIN, f"the file was created and removed again by others "
                  f"{_CREATE_ATTEMPTS} times while this call opened it", path)


def _readable_only(exc, path):
    """Whether a writable open failed only because the file may not be
    written (mode bits, a read-only file system), not for a reason of ours."""
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or \
            exc.strerror != os.strerror(exc.errno):   # e.g. a planted symlink refused
        return False
    effective = os.access in os.supports_effective_ids
    return os.path.isfile(path) and os.access(path, os.R_OK, effective_ids=effective)


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
            raise ValueError(f"{path!r} is a regular file, not a device: use open_file()")
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
        raise ValueError(f"offset {offset} is negative ({path!r})")
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
            raise ValueError(f"offset {offset} is outside {what} of {limit} bytes ({path!r})")
        if size is None:
            size = limit - offset
        elif size > limit - offset:
            raise ValueError(f"offset {offset} + size {size} is outside {what} of "
                             f"{limit} bytes ({path!r})")
    elif size is None:
        hint = " (for a UIO device, pymmapdev.UIO(path).map(i) knows)" if what == "uio" \
            else ""
        raise ValueError(f"{path!r}: pass size=: the size of a mapping of this device cannot "
                         f"be discovered (mmapdev devices and PCI resource files tell "
                         f"theirs){hint}")
    if offset + size > MAX_OFFSET:
        raise ValueError(f"offset {offset} + size {size} is past the largest file offset "
                         f"({MAX_OFFSET}) ({path!r})")
    _blocking(fd)
    try:
        return _core.Mapping(fd, size, offset, readonly=readonly, kind="device", path=path,
                             waker=waker)
    except OSError as exc:
        raise type(exc)(exc.errno, f"{exc.strerror} (the driver refused to map offset "
                        f"{offset} + {size} bytes)", path) from None
