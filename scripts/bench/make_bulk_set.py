#!/usr/bin/env python3
"""Generates the bulk benchmark set: a few thousand mixed assets plus a handful of large
ones, and manifest.jsonl with the values each file was made with (the truth the accuracy
table compares against). Called by make-bulk-set.sh, which checks the tools first.

Usage: make_bulk_set.py OUTDIR N

Media come from ffmpeg's lavfi sources (exact sizes, frame and sample counts); EXIF
orientation is written by exiftool; DICOM, PDF and text are written here byte by byte.
Parameters are drawn from a seeded RNG, so two runs give the same set. Every file is
encoded on its own (distinct bytes); only the cheap multi-output trick is used, one
ffmpeg process writing the same picture as JPEG, PNG, GIF, WebP, TIFF and BMP.
"""

import json
import os
import random
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

FF = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
# Byte-stable output: no encoder/muxer version strings, single-threaded encoders.
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-pix_fmt", "yuv420p", "-x264-params", "threads=1"]

out_dir = sys.argv[1]
total = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
rng = random.Random(20261123)
manifest = []  # (relative path, truth dict)
jobs = []  # argv lists for ffmpeg


def rel(kind, name):
    os.makedirs(os.path.join(out_dir, kind), exist_ok=True)
    return f"{kind}/{name}"


def path(r):
    return os.path.join(out_dir, r)


def truth(r, **kw):
    manifest.append((r, {k: v for k, v in kw.items() if v is not None}))


def log_uniform(lo, hi):
    return int(round(lo * (hi / lo) ** rng.random()))


# ---------------------------------------------------------------- images
def images(n_groups):
    """Each group: one picture size, written as 2 JPEGs (different quality), PNG, GIF,
    WebP (lossy or lossless), TIFF and BMP. BMP/TIFF are uncompressed, so their groups
    stay below 1024 px to keep the set's byte count dominated by typical formats."""
    jpegs = []
    for g in range(n_groups):
        w, h = log_uniform(16, 2048), log_uniform(16, 1536)
        src = rng.choice(["testsrc", "rgbtestsrc", "mandelbrot"])  # RGB sources: odd sizes stay exact
        # mandelbrot is slow at large sizes; keep it for small pictures.
        if src == "mandelbrot" and w * h > 300_000:
            src = "testsrc"
        argv = FF + ["-f", "lavfi", "-i", f"{src}=s={w}x{h}:r=1"]
        outs = []
        for q in (rng.choice([2, 4, 8]), rng.choice([12, 20, 31])):
            r = rel("image", f"g{g:04d}-q{q}.jpg")
            outs.append((r, ["-q:v", str(q)]))
            jpegs.append((r, w, h))
        outs.append((rel("image", f"g{g:04d}.png"), ["-pix_fmt", rng.choice(["rgb24", "rgba", "gray", "rgb48be"])]))
        outs.append((rel("image", f"g{g:04d}.gif"), []))
        outs.append((rel("image", f"g{g:04d}.webp"), ["-lossless", str(rng.choice([0, 1])), "-compression_level", "1"]))
        if w * h <= 1024 * 768:
            outs.append((rel("image", f"g{g:04d}.tif"), ["-pix_fmt", "rgb24"]))
            outs.append((rel("image", f"g{g:04d}.bmp"), ["-pix_fmt", "bgr24"]))
        for r, opts in outs:
            argv += ["-frames:v", "1", "-update", "1"] + opts + [path(r)]
            if not r.endswith(".jpg"):
                truth(r, data_type="image", width=w, height=h)
        jobs.append(argv)
    return jpegs


def orient_jpegs(jpegs):
    """A third of the JPEGs get an EXIF Orientation (1-8). The truth is the display size,
    as our contract reports it: 5-8 swap width and height."""
    by_orientation = {}
    for r, w, h in jpegs:
        o = rng.choice([None, None, 1, 2, 3, 4, 5, 6, 7, 8]) if rng.random() < 0.5 else None
        if o is not None:
            by_orientation.setdefault(o, []).append(path(r))
        dw, dh = (h, w) if o in (5, 6, 7, 8) else (w, h)
        truth(r, data_type="image", width=dw, height=dh, orientation=o, stored_width=w, stored_height=h)
    for o, files in sorted(by_orientation.items()):
        subprocess.run(["exiftool", "-q", "-overwrite_original", f"-Orientation#={o}"] + files, check=True)


def large_images():
    # Noise does not compress: a 4000x3000 JPEG at -q:v 2 is ~20 MB, a 2400x2000 PNG ~14 MB.
    noise = random.Random(7)
    for r, w, h, opts in [
        (rel("large", "noise-4000x3000.jpg"), 4000, 3000, ["-q:v", "2"]),
        (rel("large", "noise-2400x2000.png"), 2400, 2000, ["-compression_level", "1"]),
    ]:
        raw = path(r) + ".rgb"
        with open(raw, "wb") as f:
            f.write(noise.randbytes(w * h * 3))
        jobs.append(FF + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", raw,
                          "-frames:v", "1", "-update", "1"] + opts + [path(r)])
        truth(r, data_type="image", width=w, height=h)


# ---------------------------------------------------------------- video
FPS = [("24", 24.0), ("25", 25.0), ("30", 30.0), ("15", 15.0), ("30000/1001", 30000 / 1001), ("24000/1001", 24000 / 1001)]


def videos(n):
    kinds = ["mp4", "mp4-faststart", "mov", "webm-vp8", "webm-vp9", "mkv"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        w = 2 * (log_uniform(32, 640) // 2)
        h = 2 * (log_uniform(18, 360) // 2)
        rate, fps = rng.choice(FPS)
        frames = rng.randint(8, 90)
        dur = frames / fps
        with_audio = rng.random() < 0.5
        argv = FF + ["-f", "lavfi", "-i", f"testsrc=s={w}x{h}:r={rate}"]
        ar = rng.choice([22050, 44100, 48000])
        if with_audio:
            argv += ["-f", "lavfi", "-i", f"sine=frequency={rng.randint(200, 900)}:sample_rate={ar}:duration={dur:.6f}"]
        argv += ["-frames:v", str(frames)] + BITEXACT
        # Audio the length of the video, in a codec whose container trims the encoder
        # delay (MP4 edit lists for AAC, Matroska CodecDelay/DiscardPadding for Opus): the
        # container duration (what every tool reports) then stays the video's.
        if kind.startswith("webm"):
            vp = "libvpx" if kind == "webm-vp8" else "libvpx-vp9"
            argv += ["-c:v", vp, "-b:v", "200k", "-deadline", "realtime", "-cpu-used", "8", "-threads", "1"]
            ext = "webm"
        else:
            argv += X264
            ext = {"mp4": "mp4", "mp4-faststart": "mp4", "mov": "mov", "mkv": "mkv"}[kind]
            if kind == "mp4-faststart":
                argv += ["-movflags", "+faststart"]
        if with_audio:
            if ext in ("webm", "mkv"):
                argv += ["-c:a", "libopus", "-b:a", "32k"]
                ar = 48000
            else:
                argv += ["-c:a", "aac", "-b:a", "48k"]
        r = rel("video", f"v{i:04d}-{kind}.{ext}")
        jobs.append(argv + [path(r)])
        # Our contract gives sample_rate for audio assets only: a video's audio track
        # rate is recorded for reference under another name and not compared.
        truth(r, data_type="video", width=w, height=h, frame_count=frames, duration_seconds=round(dur, 6),
              audio_sample_rate=ar if with_audio else None)


def large_video():
    # 1280x720 noise at 20 Mbit/s for 12 s: ~30 MB, moov after mdat (ffmpeg's default).
    r = rel("large", "noise-720p-moov-at-end.mp4")
    jobs.append(FF + ["-f", "lavfi", "-i", "testsrc=s=1280x720:r=25", "-vf", "noise=alls=60:allf=t+u:all_seed=5",
                      "-frames:v", "300"] + BITEXACT +
                ["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "20M", "-minrate", "20M", "-maxrate", "20M",
                 "-bufsize", "4M", "-pix_fmt", "yuv420p", "-x264-params", "threads=2", path(r)])
    truth(r, data_type="video", width=1280, height=720, frame_count=300, duration_seconds=12.0)


# ---------------------------------------------------------------- audio
def audios(n):
    kinds = ["wav-s16", "wav-s24", "wav-u8", "mp3-cbr", "mp3-vbr", "flac", "vorbis", "opus", "m4a"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        sr = rng.choice([8000, 11025, 16000, 22050, 32000, 44100, 48000])
        if kind == "opus":
            # Opus always decodes at 48 kHz (what ffprobe and our contract report); an
            # input at another rate would only be the OpusHead "input sample rate" hint,
            # so every Opus file is made at 48 kHz to keep the truth unambiguous.
            sr = 48000
        ch = rng.choice([1, 2])
        dur = rng.randint(3, 40) * 0.2  # 0.6-8 s; a whole number of samples at every rate
        argv = FF + ["-f", "lavfi", "-i", f"sine=frequency={rng.randint(100, 2000)}:sample_rate={sr}:duration={dur:.1f}",
                     "-ac", str(ch)] + BITEXACT
        codec, ext = {
            "wav-s16": (["-c:a", "pcm_s16le"], "wav"),
            "wav-s24": (["-c:a", "pcm_s24le"], "wav"),
            "wav-u8": (["-c:a", "pcm_u8"], "wav"),
            "mp3-cbr": (["-c:a", "libmp3lame", "-b:a", rng.choice(["32k", "64k", "128k"])], "mp3"),
            "mp3-vbr": (["-c:a", "libmp3lame", "-q:a", str(rng.choice([2, 5, 8]))], "mp3"),
            "flac": (["-c:a", "flac"], "flac"),
            "vorbis": (["-c:a", "libvorbis", "-q:a", "2"], "ogg"),
            "opus": (["-c:a", "libopus", "-b:a", "32k"], "opus"),
            "m4a": (["-c:a", "aac", "-b:a", "64k"], "m4a"),
        }[kind]
        r = rel("audio", f"a{i:04d}-{kind}.{ext}")
        jobs.append(argv + codec + [path(r)])
        # MP3 streams carry the encoder delay and padding (up to ~3 frames at low rates) unless a
        # reader applies the LAME gapless fields; the accuracy check allows for that.
        tol = round(3 * (1152 if sr >= 32000 else 576) / sr, 6) if ext == "mp3" else None
        truth(r, data_type="audio", duration_seconds=round(dur, 6), sample_rate=sr, channels=ch,
              duration_extra_tolerance=tol)


def large_audio():
    r = rel("large", "sine-48k-stereo-120s.wav")
    jobs.append(FF + ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=120", "-ac", "2"] + BITEXACT +
                ["-c:a", "pcm_s16le", path(r)])
    truth(r, data_type="audio", duration_seconds=120.0, sample_rate=48000, channels=2)


# ---------------------------------------------------------------- text
WORDS = ("asset label frame pixel bucket import worker metadata header probe page sample "
         "café naïve über straße façade 漢字 データ ключ δεδομένα").split()


def texts(n):
    for i in range(n):
        kind = ("txt", "csv", "json", "md")[i % 4]
        lines = log_uniform(1, 20000)
        if kind == "txt" or kind == "md":
            body = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) for _ in range(lines)]
            if kind == "md":
                body[0] = "# " + body[0]
        elif kind == "csv":
            body = ["id,name,score,label"] + [f"{j},{rng.choice(WORDS)},{rng.random():.4f},{rng.choice(WORDS)}"
                                              for j in range(lines - 1)]
        else:
            items = max(1, (lines - 2) // 5)
            data = [{"id": j, "name": rng.choice(WORDS), "score": round(rng.random(), 4)} for j in range(items)]
            body = json.dumps(data, indent=2, ensure_ascii=False).split("\n")
        text = "\n".join(body) + "\n"
        r = rel("text", f"t{i:04d}.{kind}")
        with open(path(r), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        truth(r, data_type="text", line_count=text.count("\n"), char_count=len(text))


# ---------------------------------------------------------------- DICOM
def dicom_bytes(rows, cols, frames, bits, modality, implicit, seed, with_nof):
    """Part 10 file: preamble, explicit-VR meta group, then an explicit or implicit VR
    little-endian dataset with uncompressed monochrome pixel data."""
    def el(group, elem, vr, value, explicit=True):
        if isinstance(value, str):
            value = value.encode("ascii")
            pad = b"\0" if vr == "UI" else b" "
            if len(value) % 2:
                value += pad
        if len(value) % 2:
            value += b"\0"
        tag = struct.pack("<HH", group, elem)
        if not explicit:
            return tag + struct.pack("<I", len(value)) + value
        if vr in ("OB", "OW", "OF", "SQ", "UT", "UN"):
            return tag + vr.encode() + b"\0\0" + struct.pack("<I", len(value)) + value
        return tag + vr.encode() + struct.pack("<H", len(value)) + value

    us = lambda v: struct.pack("<H", v)  # noqa: E731
    ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    sop_class = "1.2.840.10008.5.1.4.1.1.7" if frames == 1 else (
        "1.2.840.10008.5.1.4.1.1.7.2" if bits == 8 else "1.2.840.10008.5.1.4.1.1.7.3")
    uid = f"1.2.826.0.1.3680043.10.1000.{seed}"
    meta = (el(0x0002, 0x0001, "OB", b"\0\1") + el(0x0002, 0x0002, "UI", sop_class) +
            el(0x0002, 0x0003, "UI", uid) + el(0x0002, 0x0010, "UI", ts) +
            el(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1000"))
    meta = el(0x0002, 0x0000, "UL", struct.pack("<I", len(meta))) + meta
    e = not implicit
    ds = (el(0x0008, 0x0016, "UI", sop_class, e) + el(0x0008, 0x0018, "UI", uid, e) +
          el(0x0008, 0x0060, "CS", modality, e) + el(0x0010, 0x0010, "PN", f"BENCH^{seed}", e) +
          el(0x0020, 0x000D, "UI", uid + ".1", e) + el(0x0020, 0x000E, "UI", uid + ".2", e) +
          el(0x0028, 0x0002, "US", us(1), e) + el(0x0028, 0x0004, "CS", "MONOCHROME2", e))
    if with_nof:
        ds += el(0x0028, 0x0008, "IS", str(frames), e)
    ds += (el(0x0028, 0x0010, "US", us(rows), e) + el(0x0028, 0x0011, "US", us(cols), e) +
           el(0x0028, 0x0100, "US", us(bits), e) + el(0x0028, 0x0101, "US", us(bits), e) +
           el(0x0028, 0x0102, "US", us(bits - 1), e) + el(0x0028, 0x0103, "US", us(0), e))
    pixels = random.Random(seed).randbytes(rows * cols * frames * bits // 8)
    ds += el(0x7FE0, 0x0010, "OW" if bits == 16 else "OB", pixels, e)
    return b"\0" * 128 + b"DICM" + meta + ds


def dicoms(n):
    for i in range(n):
        rows, cols = rng.choice([64, 128, 256, 512, 100, 333]), rng.choice([64, 128, 256, 512, 90, 301])
        multi = rng.random() < 0.3
        frames = rng.randint(2, 12) if multi else 1
        bits = rng.choice([8, 16])
        implicit = rng.random() < 0.3
        # Single-frame objects mostly omit NumberOfFrames, as real CT/MR slices do; the
        # standard says absent means one frame.
        with_nof = multi or rng.random() < 0.2
        r = rel("dicom", f"d{i:04d}.dcm")
        with open(path(r), "wb") as f:
            f.write(dicom_bytes(rows, cols, frames, bits, rng.choice(["CT", "MR", "US", "CR", "NM", "OT"]),
                                implicit, 1000 + i, with_nof))
        truth(r, data_type="dicom", width=cols, height=rows, frame_count=frames)


def large_dicom():
    r = rel("large", "multiframe-512x512x32-16bit.dcm")
    with open(path(r), "wb") as f:
        f.write(dicom_bytes(512, 512, 32, 16, "CT", False, 99, True))
    truth(r, data_type="dicom", width=512, height=512, frame_count=32)


# ---------------------------------------------------------------- PDF
SIZES = [(612, 792), (595, 842), (842, 1191), (300, 200), (1224, 792), (420, 595)]


def pdf_bytes(pages, size, rotate_first, inherit, fanout):
    """Classic xref table; the page tree is flat or split into /Pages nodes of `fanout`
    kids; MediaBox on each page or inherited from the root."""
    objs = {}
    w, h = size
    page_ids = list(range(3, 3 + pages))
    content_ids = list(range(3 + pages, 3 + 2 * pages))
    next_id = 3 + 2 * pages
    kids_of_root = page_ids
    parent = {p: 2 for p in page_ids}
    if fanout and pages > fanout:
        kids_of_root = []
        for k in range(0, pages, fanout):
            node = next_id
            next_id += 1
            chunk = page_ids[k:k + fanout]
            for p in chunk:
                parent[p] = node
            objs[node] = (f"<< /Type /Pages /Parent 2 0 R /Count {len(chunk)} /Kids ["
                          + " ".join(f"{p} 0 R" for p in chunk) + "] >>")
            kids_of_root.append(node)
    box = f"/MediaBox [0 0 {w} {h}]"
    objs[1] = "<< /Type /Catalog /Pages 2 0 R >>"
    objs[2] = (f"<< /Type /Pages {box if inherit else ''} /Count {pages} /Kids ["
               + " ".join(f"{k} 0 R" for k in kids_of_root) + "] >>")
    for n, (p, c) in enumerate(zip(page_ids, content_ids)):
        rot = " /Rotate 90" if rotate_first and n == 0 else ""
        objs[p] = (f"<< /Type /Page /Parent {parent[p]} 0 R {'' if inherit else box}{rot}"
                   f" /Resources << >> /Contents {c} 0 R >>")
        stream = f"{n % 9 + 1} w 20 20 m {w - 20} {h - 20} l S"
        objs[c] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for i in sorted(objs):
        offsets[i] = len(out)
        out += f"{i} 0 obj\n{objs[i]}\nendobj\n".encode()
    xref = len(out)
    size_ = max(objs) + 1
    out += f"xref\n0 {size_}\n0000000000 65535 f \n".encode()
    for i in range(1, size_):
        out += f"{offsets[i]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {size_} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def pdfs(n):
    for i in range(n):
        pages = log_uniform(1, 400)
        size = rng.choice(SIZES)
        rotate = rng.random() < 0.15
        r = rel("pdf", f"p{i:04d}.pdf")
        with open(path(r), "wb") as f:
            f.write(pdf_bytes(pages, size, rotate, rng.random() < 0.3, rng.choice([None, 8, 32])))
        # Display size of page 1 (/Rotate 90 swaps), as our contract reports it.
        w, h = (size[1], size[0]) if rotate else size
        truth(r, data_type="pdf", page_count=pages, width=w, height=h)


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr}")


def main():
    os.makedirs(out_dir, exist_ok=True)
    share = total / 2000
    jpegs = images(max(1, round(100 * share)))  # ~7 files a group
    videos(max(6, round(300 * share)))
    audios(max(9, round(500 * share)))
    large_images()
    large_video()
    large_audio()
    texts(max(4, round(200 * share)))
    dicoms(max(1, round(150 * share)))
    large_dicom()
    pdfs(max(1, round(150 * share)))
    # The big encode first, so it overlaps the many small ones.
    jobs.sort(key=lambda a: "noise-720p" not in " ".join(a))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(run, jobs))
    for name in os.listdir(path("large")):
        if name.endswith(".rgb"):
            os.remove(path(f"large/{name}"))
    orient_jpegs(jpegs)
    with open(path("manifest.jsonl"), "w") as f:
        for r, t in sorted(manifest):
            f.write(json.dumps({"path": r, **t}, ensure_ascii=False) + "\n")
    print(f"{len(manifest)} files in {out_dir}", file=sys.stderr)


main()
