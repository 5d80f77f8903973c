#!/usr/bin/env python3
"""Throughput under real latency (issue 12), driven by scripts/bench-latency.sh.

One `metadata-worker run` replica takes import jobs from RabbitMQ and reads presigned
ranges from s3s-fs through latency_proxy.py, which holds every request for
--latency-ms before it goes upstream (and removes s3s-fs's own ~40 ms keep-alive stall,
see the proxy). For each CONCURRENCY it reports assets/s beside the ideal
CONCURRENCY / (requests per asset × latency), peak RSS and CPU. First the stand-in's
floor: the same run without added latency, straight to s3s-fs and through the proxy.

The set: ASSETS keys, half JPEG and half MP4, hard links of the committed fixtures plus
two 32 MiB sparse MP4s (moov first and moov last: 2 and 3 ranged reads), so that the
worker makes the ranged rounds it makes on real files. Reuses the run machinery of
pipeline.py (own queues and database per run, every process stopped on exit).

usage: latency.py --bin BIN --s3s BIN --work DIR [--latency-ms 30] [--concurrency 4,16,64,256]
"""
import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline as P  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def asset_set(work, n):
    """[(key, data_type, size, path, sparse)], n of them, half JPEG and half MP4."""
    jpegs = sorted(glob.glob(os.path.join(ROOT, "fixtures/assets/image/jpeg-*.jpg")))
    mp4s = sorted(glob.glob(os.path.join(ROOT, "fixtures/assets/video/*.mp4")))
    sparse_dir = os.path.join(work, "sparse")
    os.makedirs(sparse_dir, exist_ok=True)
    src = os.path.join(ROOT, "fixtures/assets/video/faststart.mp4")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts/bench/make-sparse-video.py"), src,
                          sparse_dir, str(32 / 1024)], check=True, capture_output=True, text=True).stdout
    mp4s += [p for p in out.split() if p.endswith(".mp4")]
    items = []
    for i in range(n):
        pool = jpegs if i % 2 == 0 else mp4s
        path = pool[(i // 2) % len(pool)]
        kind = "image" if pool is jpegs else "video"
        items.append((f"lat/{i:05d}-{os.path.basename(path)}", kind, os.path.getsize(path), path, False))
    return items


def start_proxy(work, upstream_port, latency_ms, name):
    port = P.free_port()
    stats = os.path.join(work, f"proxy-{name}.json")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts/bench/latency_proxy.py"), "--listen",
                          str(port), "--upstream", f"127.0.0.1:{upstream_port}", "--latency-ms", str(latency_ms),
                          "--stats", stats], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, f"proxy-{name}.log"), "w"))
    P.CHILDREN.append(p)
    if not P.wait_port(port):
        sys.exit("the latency proxy did not start listening")
    return p, port, stats


def stop_proxy(p, stats):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    with open(stats) as f:
        return json.load(f)


def machine_cpu():
    """(busy, total) jiffies of every CPU, from /proc/stat. Time of niced processes
    (a build at nice 19 beside the benchmark) counts as free: they yield to it."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = [int(x) for x in f.readline().split()[1:9]]
    busy = user + system + irq + softirq + steal
    return busy, busy + nice + idle + iowait


def one_run(a, items, s3s_port, name, concurrency, latency_ms, proxied):
    proxy = None
    port = s3s_port
    if proxied:
        proxy, port, stats = start_proxy(a.work, s3s_port, latency_ms, name)
    storage = {"provider": "s3_compatible", "id": "int-bench-latency", "org_id": "org-bench", "region": "us-east-1",
               "endpoint": f"http://127.0.0.1:{port}", "path_style": True, "buckets": [P.BUCKET],
               "access": {"type": "iam_user", "access_key_id": P.S3_KEY, "secret_ref": "env:BENCH_S3_SECRET"}}
    # Jobs of 20 assets are ~5 KB: a 256 KiB MAX_JOB_BYTES lets PREFETCH follow CONCURRENCY
    # (up to 64 jobs within the 16 MiB a replica holds in messages). With the default
    # 4 MiB, PREFETCH is 4 and 4 jobs of 20 assets cap the assets in hand at 80.
    prefetch = min(max(concurrency // 4, 4), 64)
    env = {"ORG_SECRET_ORG_BENCH__BENCH_S3_SECRET": P.S3_SECRET, "ALLOWED_ENDPOINTS": "127.0.0.1",
           "MAX_JOB_BYTES": str(256 * 1024), "PREFETCH": str(prefetch)}
    files, by_id = P.write_jobs(os.path.join(a.work, "jobs", name), name, items, storage,
                                lambda k: f"s3://{P.BUCKET}/{k}")
    job_ids = [os.path.basename(f)[:-5] for f in files]
    P.CONCURRENCY = str(concurrency)
    busy0, total0 = machine_cpu()
    s3s0 = P.proc_usage(P.S3S_PID)[1]
    r = P.run_pipeline(a, name, 1, "ranged", files, len(by_id), job_ids, env)
    busy1, total1 = machine_cpu()
    # Shares of the whole machine (all CPUs) over the run, replica start-up included.
    r["machine_busy"] = (busy1 - busy0) / max(total1 - total0, 1)
    r["s3s_cpu"] = P.proc_usage(P.S3S_PID)[1] - s3s0
    r["proxy_cpu"] = P.proc_usage(proxy.pid)[1] if proxy else 0.0
    r["requests"] = stop_proxy(proxy, stats)["requests"] if proxy else None
    r["concurrency"], r["latency_ms"], r["proxied"], r["prefetch"] = concurrency, latency_ms, proxied, prefetch
    return r


def stage_mean(rep, stage):
    """Mean milliseconds of a stage, from the replica's asset_stage_seconds histogram."""
    m = rep["metrics"]
    label = f'{{stage="{stage}"}}'
    count = m[f"metadata_worker_asset_stage_seconds_count{label}"]
    return m[f"metadata_worker_asset_stage_seconds_sum{label}"] / count * 1000 if count else float("nan")


def report(runs):
    print("| path to s3s-fs | added latency | CONCURRENCY (PREFETCH) | assets (errors) | assets/s | requests per asset "
          "| ideal assets/s | of ideal | p50 / p99 ms per asset | peak RSS MiB | worker CPU per asset "
          "| mean ms download / write / total | CPU-s worker / s3s-fs / proxy | machine CPU busy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|---:|")
    for r in runs:
        rep = r["reps"][0]
        rate = r["assets"] / r["wall"] if r["wall"] else 0
        reads = rep["metrics"]["metadata_worker_ranged_reads_total"]
        per_asset = (r["requests"] if r["requests"] is not None else reads) / max(r["assets"], 1)
        lat = [d["timings_ms"].get("total", 0) for d in r["results"].values()]
        if r["latency_ms"] > 0:
            ideal = r["concurrency"] / (per_asset * r["latency_ms"] / 1000)
            ideal_s, of = f"{ideal:.0f}", f"{rate / ideal * 100:.0f} %"
        else:
            ideal_s, of = "–", "–"
        path = "latency proxy" if r["proxied"] else "direct"
        print(f"| {path} | {r['latency_ms']:g} ms | {r['concurrency']} ({r['prefetch']}) | {r['assets']} ({r['errors']}) "
              f"| {rate:.0f} "
              f"| {per_asset:.2f} | {ideal_s} | {of} | {P.pct(lat, 50):.0f} / {P.pct(lat, 99):.0f} "
              f"| {P.mib(rep['rss']):.1f} | {rep['cpu'] / max(r['assets'], 1) * 1000:.2f} ms "
              f"| {stage_mean(rep, 'download'):.0f} / {stage_mean(rep, 'write'):.0f} / {stage_mean(rep, 'total'):.0f} "
              f"| {rep['cpu']:.1f} / {r['s3s_cpu']:.1f} / {r['proxy_cpu']:.1f} | {r['machine_busy'] * 100:.0f} % |")
    print()
    errs = [f"{r['name']}: {r['codes']}" for r in runs if r["errors"]]
    if errs:
        print("Error codes: " + "; ".join(errs))
        print()


def body(a):
    items = asset_set(a.work, a.assets)
    root = os.path.join(a.work, "s3root")
    P.stage_bucket(root, items)
    port = P.free_port()
    s3s = subprocess.Popen([a.s3s, "--host", "127.0.0.1", "--port", str(port), "--access-key", P.S3_KEY,
                            "--secret-key", P.S3_SECRET, root],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(a.work, "s3s-fs.log"), "w"))
    P.CHILDREN.append(s3s)
    P.S3S_PID = s3s.pid
    if not P.wait_port(port):
        sys.exit("s3s-fs did not start listening")

    floor_c = int(a.concurrency.split(",")[0])
    floor = [one_run(a, items, port, "floor-direct", floor_c, 0, False),
             one_run(a, items, port, "floor-proxy", floor_c, 0, True)]
    # Enough assets that ramp-up and the last jobs' tail stay small next to the steady
    # state: at least 100 per unit of concurrency.
    runs = []
    for c in (int(x) for x in a.concurrency.split(",") if x):
        n = max(a.assets, 100 * c)
        many = items if n <= len(items) else asset_set(a.work, n)
        if len(many) > len(items):
            P.stage_bucket(root, many)
            items = many
        runs.append(one_run(a, items[:n], port, f"lat{a.latency_ms:g}-c{c}", c, a.latency_ms, True))

    print(f"### The stand-in's floor (no added latency, CONCURRENCY={floor_c})")
    print()
    report(floor)
    print(f"### {a.latency_ms:g} ms added to every request")
    print()
    report(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--s3s", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--latency-ms", type=float, default=float(os.environ.get("BENCH_LATENCY_MS", "30")))
    ap.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY_LIST", "4,16,64,256"))
    ap.add_argument("--assets", type=int, default=int(os.environ.get("BENCH_ASSETS", "800")))
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, P.on_signal)
    signal.signal(signal.SIGINT, P.on_signal)
    try:
        body(a)
    finally:
        P.cleanup()


if __name__ == "__main__":
    main()
