"""A producer, several workers and a collector passing numpy frames through channels.

    python examples/pipeline.py [frames] [workers]      (defaults 200 and 3)

The producer sends frames (a 256x256 float32 image and its sequence number)
into one multi-consumer channel; each worker receives frames from it,
computes a small result (the frame's mean and max), and sends that into a
multi-producer channel read by the collector.  Every process maps the same
file and constructs the channels the same way: nothing but the path and the
layout is shared.  close_send() ends each stream.
"""
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time

import numpy as np

import pymmapdev
from pymmapdev import Channel

FRAMES_CAP = 4 << 20            # room for a few 256 KiB frames
RESULTS_CAP = 64 << 10
RESULT = struct.Struct("<Qdd")  # sequence number, mean, max


def layout(path: str) -> tuple[pymmapdev.Mapping, Channel, Channel]:
    """(mapping, frames channel, results channel) of the shared file."""
    second = Channel.size_for(FRAMES_CAP)
    m = pymmapdev.open_file(path, second + Channel.size_for(RESULTS_CAP))
    frames = Channel(m, 0, FRAMES_CAP, multi_consumer=True)
    results = Channel(m, second, RESULTS_CAP, multi_producer=True)
    return m, frames, results


def producer(path: str, count: int) -> None:
    m, frames, results = layout(path)
    rng = np.random.default_rng(0)
    for seq in range(count):
        frame = rng.random((256, 256), dtype=np.float32)
        frame[0, 0] = seq                       # the sequence number rides in the frame
        frames.send_array(frame)
    frames.close_send()


def worker(path: str) -> int:
    m, frames, results = layout(path)
    done = 0
    while True:
        try:
            frame = frames.recv_array()
        except EOFError:
            break
        seq = int(frame[0, 0])
        frame[0, 0] = 0
        results.send(RESULT.pack(seq, float(frame.mean()), float(frame.max())))
        done += 1
    return done


def arguments() -> tuple[int, int]:
    """(frames, workers) from the command line; the usage on anything else
    (no worker would leave the collector waiting for results nobody makes)."""
    args = sys.argv[1:]
    if len(args) > 2 or not all(a.isdigit() and int(a) > 0 for a in args):
        sys.exit(__doc__)
    count, nworkers = (int(a) for a in args + ["200", "3"][len(args):])
    return count, nworkers


def main() -> None:
    count, nworkers = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline")
        m, frames, results = layout(path)       # the collector; creates the file
        ctx = mp.get_context("spawn")
        workers = [ctx.Process(target=worker, args=(path,)) for _ in range(nworkers)]
        prod = ctx.Process(target=producer, args=(path, count))
        start = time.monotonic()
        for p in workers + [prod]:
            p.start()
        seen: set[int] = set()
        while len(seen) < count:
            msg = results.recv(timeout=60)
            if msg is None:
                raise SystemExit("no result for 60 s: a worker died?")
            seq, mean, peak = RESULT.unpack(msg)
            assert seq not in seen and 0.4 < mean < 0.6 and peak <= 1.0
            seen.add(seq)
        for p in workers + [prod]:
            p.join()
        elapsed = time.monotonic() - start
        print(f"{count} frames of {256 * 256 * 4 // 1024} KiB through {nworkers} workers "
              f"in {elapsed:.2f} s ({count / elapsed:.0f} frames/s); every frame seen once")
        del frames, results
        m.close()


if __name__ == "__main__":
    main()
