#!/usr/bin/env python3
"""Makes multi-GB sparse MP4s from a small fixture, for memory benchmarks (never committed).

usage: make-sparse-video.py SRC.mp4 OUTDIR [GiB]
Writes OUTDIR/sparse-moov-first.mp4 (ftyp, moov, then an mdat that runs to the end of a
sparse file) and OUTDIR/sparse-moov-last.mp4 (ftyp, a sparse 64-bit mdat, then moov),
so the probe has to seek past gigabytes it must never read. Sample offsets no longer
point at real samples; the header values (duration, frames, size) are what is measured.
"""
import os
import struct
import sys


def boxes(data):
    off = 0
    while off + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[off:off + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[off + 8:off + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - off
        yield kind, data[off:off + size], header
        off += size


def main():
    src, outdir = sys.argv[1], sys.argv[2]
    gib = float(sys.argv[3]) if len(sys.argv) > 3 else 4.0
    extra = int(gib * (1 << 30))
    data = open(src, "rb").read()
    parts = {kind: (raw, header) for kind, raw, header in boxes(data)}
    for need in (b"ftyp", b"moov", b"mdat"):
        if need not in parts:
            sys.exit(f"{src}: no {need.decode()} box")
    ftyp, moov = parts[b"ftyp"][0], parts[b"moov"][0]
    mdat_raw, mdat_header = parts[b"mdat"]
    payload = mdat_raw[mdat_header:]
    os.makedirs(outdir, exist_ok=True)

    first = os.path.join(outdir, "sparse-moov-first.mp4")
    with open(first, "wb") as f:
        f.write(ftyp + moov + struct.pack(">I4s", 0, b"mdat") + payload)
        f.truncate(f.tell() + extra)

    last = os.path.join(outdir, "sparse-moov-last.mp4")
    with open(last, "wb") as f:
        f.write(ftyp)
        mdat_size = 16 + len(payload) + extra
        f.write(struct.pack(">I4sQ", 1, b"mdat", mdat_size) + payload)
        f.seek(len(ftyp) + mdat_size)
        f.write(moov)
    print(first)
    print(last)


if __name__ == "__main__":
    main()
