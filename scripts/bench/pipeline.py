#!/usr/bin/env python3
"""End-to-end pipeline benchmark (issue 5, parts 2 and 3), driven by scripts/bench-pipeline.sh.

Jobs of ~20 assets go through RabbitMQ to 1 or 2 `metadata-worker run` replicas, which
download from s3s-fs (presigned URLs, SigV4 checked) and write to PostgreSQL and JSONL.
Each run gets its own queues, exchange and database, so runs never see each other's
messages or rows. Per replica: /metrics just before SIGTERM, peak RSS (VmHWM) and CPU
time (utime+stime) from /proc. A smaller delegated run (iam_delegated, STS AssumeRole on
moto) counts STS calls per integration. Prints Markdown tables on stdout, progress on
stderr. Every process it starts is stopped on exit, interrupts included.

usage: pipeline.py --bin BIN --bulk DIR --work DIR --sparse FILE... [--s3s BIN]
"""
import argparse
import base64
import collections
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
MOTO = os.environ.get("MOTO_ENDPOINT", "http://127.0.0.1:5000")
JOB_SIZE = int(os.environ.get("BENCH_JOB_SIZE", "20"))
CONCURRENCY = os.environ.get("BENCH_CONCURRENCY", "4")
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "1200"))
BUCKET = "bench-assets"
S3_KEY, S3_SECRET = "benchpipelinekey", "bench-pipeline-secret-0123456789"
BIG = 10 * 1000 * 1000
CLK = os.sysconf("SC_CLK_TCK")

CHILDREN = []  # every Popen this process started, stopped in cleanup()
S3S_PID = None  # s3s-fs, whose file reads (/proc/PID/io rchar) each run reports


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def stop(p, grace=40):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cleanup(*_):
    for p in CHILDREN:
        try:
            stop(p, grace=10)
        except Exception:
            pass


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def psql(sql, db="postgres"):
    out = subprocess.run(["psql", f"{PG}/{db}", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True)


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt_pct(x):
    return "–" if x != x else (f"{x * 100:.2f} %" if x >= 0.0001 or x == 0 else f"{x * 100:.4f} %")


def mib(n):
    return n / (1 << 20)


# ---------------------------------------------------------------- the asset set

def load_set(bulk, sparse):
    """[(key, data_type, size, path)] for the bulk set, then the sparse MP4s."""
    items = []
    with open(os.path.join(bulk, "manifest.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            path = os.path.join(bulk, d["path"])
            items.append((d["path"], d["data_type"], os.path.getsize(path), path, False))
    for path in sparse:
        items.append(("sparse/" + os.path.basename(path), "video", os.path.getsize(path), path, True))
    return items


def stage_bucket(root, items):
    """s3s-fs serves one subdirectory per bucket: hard links (or copies) of the set."""
    bdir = os.path.join(root, BUCKET)
    if os.path.isdir(bdir):
        shutil.rmtree(bdir)
    for key, _, _, path, _ in items:
        dst = os.path.join(bdir, key)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(path, dst)
        except OSError:
            shutil.copyfile(path, dst)
        # s3s-fs hashes the whole object on every GET unless an ETag was stored at
        # PutObject; objects placed on disk get one here, as S3 would have stored it.
        enc = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")
        st = os.stat(dst)
        etag = hashlib.md5(f"{key}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        with open(os.path.join(root, f".bucket-{enc(BUCKET)}.object-{enc(key)}.internal.json"), "w") as f:
            json.dump({"e_tag": etag}, f)


def write_jobs(outdir, run, items, storage, url_of):
    """Jobs of JOB_SIZE assets (the sparse files in a job of their own); returns
    (files, {asset_id: item})."""
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    groups = []
    normal = [it for it in items if not it[4]]
    groups += [normal[i:i + JOB_SIZE] for i in range(0, len(normal), JOB_SIZE)]
    sparse = [it for it in items if it[4]]
    if sparse:
        groups.append(sparse)
    files, by_id, n = [], {}, 0
    for j, group in enumerate(groups):
        assets = []
        for it in group:
            aid = f"{run}-a{n:05d}"
            n += 1
            by_id[aid] = it
            assets.append({"asset_id": aid, "external_id": it[0], "url": url_of(it[0])})
        job = {"schema": "import-job/v1", "job_id": f"{run}-j{j:04d}", "org_id": "org-bench",
               "project_id": "proj-bench", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "storage": storage, "assets": assets}
        path = os.path.join(outdir, f"{run}-j{j:04d}.json")
        with open(path, "w") as f:
            json.dump(job, f)
        files.append(path)
    return files, by_id


# ---------------------------------------------------------------- one run

def proc_usage(pid):
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    cpu = (int(fields[11]) + int(fields[12])) / CLK
    return hwm, cpu


def rchar(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def parse_metrics(text):
    m = collections.Counter()
    fetches = collections.Counter()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        if name.startswith("metadata_worker_fetches_total{"):
            labels = dict(kv.split("=", 1) for kv in name[name.index("{") + 1:-1].split(","))
            fetches[labels["path"].strip('"')] += v
        else:
            base = name.split("{", 1)[0]
            m[base] += v
            if base.startswith("metadata_worker_asset_stage_seconds_") and not base.endswith("_bucket"):
                m[name] += v  # per stage: sum and count of each
            if base == "metadata_worker_jobs_total" and 'outcome="dead_lettered"' in name:
                m["dead_lettered"] += v
    return m, fetches


def run_pipeline(a, name, replicas, mode, job_files, n_assets, job_ids, extra_env):
    """Starts the replicas, publishes, waits for every row, measures, stops."""
    rdir = os.path.join(a.work, "runs", name)
    if os.path.isdir(rdir):
        shutil.rmtree(rdir)
    os.makedirs(rdir)
    db = "bench_pipeline_" + name.replace("-", "_")
    psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{db}"')
    q = {"JOBS_EXCHANGE": f"bench-pipeline.{name}", "JOBS_QUEUE": f"bench-pipeline.{name}.jobs",
         "RETRY_QUEUE": f"bench-pipeline.{name}.retry", "DEAD_LETTER_QUEUE": f"bench-pipeline.{name}.dlq"}
    for k in ("JOBS_QUEUE", "RETRY_QUEUE", "DEAD_LETTER_QUEUE"):
        rabbitmqctl("delete_queue", q[k])
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(q)
    base.update({"AMQP_URL": AMQP_URL, "DATABASE_URL": f"{PG}/{db}", "SINKS": "postgres,jsonl",
                 "CONCURRENCY": CONCURRENCY, "FETCH_MODE": mode, "LOG_FORMAT": "json",
                 "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "warn"), "RETRY_DELAY": "1s"})
    base.update(extra_env)
    reps = []
    for r in range(replicas):
        port = free_port()
        env = dict(base, TEMP_DIR=os.path.join(rdir, f"tmp{r}"), METRICS_ADDR=f"127.0.0.1:{port}",
                   JSONL_PATH=os.path.join(rdir, f"results{r}.jsonl"))
        errlog = open(os.path.join(rdir, f"worker{r}.log"), "w")
        p = subprocess.Popen([a.bin, "run"], env=env, stdout=errlog, stderr=errlog)
        CHILDREN.append(p)
        reps.append({"p": p, "port": port, "jsonl": env["JSONL_PATH"]})
    for r in reps:
        end = time.time() + 60
        while True:
            if r["p"].poll() is not None:
                sys.exit(f"{name}: a replica exited at start; see {rdir}/worker*.log")
            try:
                if http_get(f"http://127.0.0.1:{r['port']}/readyz", 1)[0] == 200:
                    break
            except Exception:
                pass
            if time.time() > end:
                sys.exit(f"{name}: a replica was not ready within 60 s; see {rdir}")
            time.sleep(0.1)

    log(f"{name}: {replicas} replica(s), FETCH_MODE={mode}, {n_assets} assets in {len(job_files)} jobs")
    penv = dict(os.environ, AMQP_URL=AMQP_URL, **q)
    s3s_read0 = rchar(S3S_PID)
    t0 = time.time()
    subprocess.run([a.bin, "publish", *job_files], env=penv, check=True,
                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(rdir, "publish.log"), "w"))
    t_published = time.time()
    ids = ",".join(f"'{j}'" for j in job_ids)
    done, last, polls = 0, None, 0
    while True:
        row = psql(f"SELECT count(*), extract(epoch FROM max(updated_at)) FROM asset_metadata "
                   f"WHERE job_id IN ({ids})", db)
        cnt, last = row.split("|")
        done = int(cnt)
        if done >= n_assets:
            break
        if any(r["p"].poll() is not None for r in reps):
            sys.exit(f"{name}: a replica died; see {rdir}/worker*.log")
        if time.time() - t0 > TIMEOUT:
            log(f"{name}: timed out with {done}/{n_assets} rows")
            break
        polls += 1
        if polls % 5 == 0:  # every job settled, some dead-lettered: no more rows will come
            dead = 0
            for r in reps:
                try:
                    dead += parse_metrics(http_get(f"http://127.0.0.1:{r['port']}/metrics")[1])[0]["dead_lettered"]
                except Exception:
                    pass
            settled = int(psql(f"SELECT count(*) FROM job_completed WHERE job_id IN ({ids})", db))
            if dead and settled + dead >= len(job_ids):
                log(f"{name}: {int(dead)} job(s) dead-lettered; stopping with {done}/{n_assets} rows")
                break
        time.sleep(0.2)
    wall = float(last) - t0 if last else time.time() - t0
    # Let the jobs settle (ack, job_completed) before reading the counters.
    end = time.time() + 30
    while time.time() < end:
        if int(psql(f"SELECT count(*) FROM job_completed WHERE job_id IN ({ids})", db)) >= len(job_ids):
            break
        time.sleep(0.2)
    for r in reps:
        _, text = http_get(f"http://127.0.0.1:{r['port']}/metrics")
        r["metrics"], r["fetches"] = parse_metrics(text)
        r["rss"], r["cpu"] = proc_usage(r["p"].pid)
    s3s_read = rchar(S3S_PID) - s3s_read0
    for r in reps:
        stop(r["p"])
    errors = int(psql(f"SELECT count(*) FROM asset_metadata WHERE status = 'error' AND job_id IN ({ids})", db))
    codes = psql(f"SELECT coalesce(string_agg(error_code || '×' || n, ', '), '') FROM (SELECT error_code, "
                 f"count(*) n FROM asset_metadata WHERE status = 'error' AND job_id IN ({ids}) "
                 f"GROUP BY 1 ORDER BY 2 DESC) s", db)
    results = {}
    for r in reps:
        if os.path.exists(r["jsonl"]):
            with open(r["jsonl"]) as f:
                for line in f:
                    d = json.loads(line)
                    if d.get("schema") == "asset-metadata/v1":
                        results[d["asset_id"]] = d
    for k in ("JOBS_QUEUE", "RETRY_QUEUE", "DEAD_LETTER_QUEUE"):
        rabbitmqctl("delete_queue", q[k])
    log(f"{name}: {done}/{n_assets} rows in {wall:.1f} s (publish took {t_published - t0:.1f} s), "
        f"{errors} errors {codes}")
    return {"name": name, "replicas": replicas, "mode": mode, "assets": done, "expected": n_assets,
            "wall": wall, "errors": errors, "s3s_read": s3s_read, "codes": codes, "reps": reps, "results": results}


# ---------------------------------------------------------------- delegated (STS) setup on moto

def moto_setup(items, run):
    """A base user that may assume a reader role (trust requires the ExternalId), a
    bucket with ~100 small assets; enforcement switched back on afterwards."""
    import boto3

    def reset_auth(count):
        req = urllib.request.Request(f"{MOTO}/moto-api/reset-auth", data=count.encode(),
                                     headers={"Content-Type": "text/plain"}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    kw = {"endpoint_url": MOTO, "region_name": "us-east-1",
          "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    reset_auth("inf")  # as the tests do: enforcement off while setting up
    iam = boto3.client("iam", **kw)
    user = f"bench-worker-{run}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(UserName=user, PolicyName="assume", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    account = "123456789012"
    bucket = f"bench-sts-{run}"
    external_id = f"ext-{run}-Zq8"
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:user/{user}"},
        "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}]}
    role = iam.create_role(RoleName=f"bench-reader-{run}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"bench-reader-{run}", PolicyName="read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": [f"arn:aws:s3:::{bucket}"]}]}))
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket=bucket)
    for key_name, _, _, path, _ in items:
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key_name, Body=f.read())
    # moto answers 500 to presigned URLs while IAM enforcement is on, so the runs go
    # with it off; the caller switches it back on right after (reset_auth("0")).
    return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "role": role,
            "external_id": external_id, "bucket": bucket, "enforced": False, "reset_auth": reset_auth}


def pick_small(items, n):
    """n small assets, round-robin over data types, in manifest order."""
    by_type = collections.defaultdict(list)
    for it in items:
        if not it[4] and it[2] < 2_000_000:
            by_type[it[1]].append(it)
    out, i = [], 0
    types = sorted(by_type)
    while len(out) < n and any(by_type.values()):
        t = types[i % len(types)]
        if by_type[t]:
            out.append(by_type[t].pop(0))
        i += 1
    return out


# ---------------------------------------------------------------- tables

def table_a(runs):
    print("### A. Per run (RabbitMQ → s3s-fs presigned GETs → probe → PostgreSQL + JSONL)")
    print()
    print("| run | replicas | FETCH_MODE | assets (errors) | wall s | assets/s | p50 ms | p99 ms "
          "| downloaded / object bytes | S3 server file reads | peak RSS MiB per replica | CPU per asset | fetch paths |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|")
    for r in runs:
        res = list(r["results"].values())
        lat = [d["timings_ms"].get("total", 0) for d in res]
        down = sum(x["metrics"]["metadata_worker_downloaded_bytes_total"] for x in r["reps"])
        obj = sum(x["metrics"]["metadata_worker_object_bytes_total"] for x in r["reps"])
        cpu = sum(x["cpu"] for x in r["reps"])
        paths = collections.Counter()
        for x in r["reps"]:
            paths.update(x["fetches"])
        server = "moto" if r["name"].startswith("sts") else f"{mib(r['s3s_read']):.1f} MiB"
        rss = " / ".join(f"{mib(x['rss']):.1f}" for x in r["reps"])
        print(f"| {r['name']} | {r['replicas']} | {r['mode']} | {r['assets']} ({r['errors']}) | {r['wall']:.1f} "
              f"| {r['assets'] / r['wall']:.1f} | {pct(lat, 50):.0f} | {pct(lat, 99):.0f} "
              f"| {mib(down):.1f} MiB / {mib(obj):.1f} MiB = {fmt_pct(down / obj if obj else 0)} "
              f"| {server} | {rss} | {cpu / max(r['assets'], 1) * 1000:.2f} ms "
              f"| {', '.join(f'{k} {int(v)}' for k, v in sorted(paths.items()))} |")
    print()
    errs = [f"{r['name']}: {r['codes']}" for r in runs if r["errors"]]
    if errs:
        print("Error codes: " + "; ".join(errs))
        print()


def ratios(run):
    """{asset_id: (item, ratio, download ms, total ms)} from the JSONL results."""
    out = {}
    for aid, d in run["results"].items():
        it = run["by_id"].get(aid)
        if it is None or d.get("status") != "ok":
            continue
        size = d.get("size_bytes") or it[2]
        out[aid] = (it, d["bytes_downloaded"] / size if size else 0.0,
                    d["timings_ms"].get("download", 0), d["timings_ms"].get("total", 0), d["bytes_downloaded"])
    return out


def table_b(ranged, full):
    rr, fr = ratios(ranged), ratios(full)
    # The same assets by manifest key in both runs.
    rk = {v[0][0]: v for v in rr.values()}
    fk = {v[0][0]: v for v in fr.values()}
    common = sorted(set(rk) & set(fk))
    print(f"### B. Bytes downloaded / object size, ranged ({ranged['name']}) vs full ({full['name']}), "
          f"same {len(common)} assets")
    print()
    print("| data type | assets | ranged median | ranged mean | full median | full mean "
          "| ranged MiB | full MiB | ranged download ms (mean) | full download ms (mean) "
          "| ranged total ms p50 | full total ms p50 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def row(label, keys):
        if not keys:
            return
        r = [rk[k] for k in keys]
        f = [fk[k] for k in keys]
        print(f"| {label} | {len(keys)} | {fmt_pct(statistics.median(x[1] for x in r))} "
              f"| {fmt_pct(statistics.mean(x[1] for x in r))} | {fmt_pct(statistics.median(x[1] for x in f))} "
              f"| {fmt_pct(statistics.mean(x[1] for x in f))} | {mib(sum(x[4] for x in r)):.1f} "
              f"| {mib(sum(x[4] for x in f)):.1f} | {statistics.mean(x[2] for x in r):.1f} "
              f"| {statistics.mean(x[2] for x in f):.1f} | {pct([x[3] for x in r], 50):.0f} "
              f"| {pct([x[3] for x in f], 50):.0f} |")

    types = sorted({rk[k][0][1] for k in common})
    for t in types:
        row(t, [k for k in common if rk[k][0][1] == t])
    row("**all**", common)
    big = [k for k in common if rk[k][0][2] >= BIG]
    for t in types:
        row(f"{t} ≥ 10 MB", [k for k in big if rk[k][0][1] == t])
    print()
    print("Files ≥ 10 MB, one by one (the 4 GiB sparse MP4s only in the ranged run: "
          "FETCH_MODE=full skips them):")
    print()
    print("| file | size | ranged bytes | ranged share | ranged download ms | full bytes | full download ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    target = []
    for k in sorted(k for k in rk if rk[k][0][2] >= BIG):
        r = rk[k]
        f = fk.get(k)
        if r[0][1] in ("image", "video", "dicom"):
            target.append(r[1])
        print(f"| {k} | {mib(r[0][2]):.1f} MiB | {r[4]} | {fmt_pct(r[1])} | {r[2]} "
              f"| {f[4] if f else 'skipped'} | {f[2] if f else '–'} |")
    print()
    if target:
        med = statistics.median(target)
        print(f"Target: median bytes downloaded ≤ 1 % of the file for images/video/DICOM ≥ 10 MB "
              f"(ranged, {len(target)} files): **{fmt_pct(med)}** → {'met' if med <= 0.01 else 'NOT met'}.")
        print()


def table_c(sts_runs, integ):
    print("### C. STS AssumeRole calls, delegated integration (iam_delegated + ExternalId; STS on moto)")
    print()
    print("| run | replicas | integrations | jobs | assets (errors) | wall s | sts_assume_role_calls per replica "
          "| calls per integration per replica |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in sts_runs:
        calls = [int(x["metrics"]["metadata_worker_sts_assume_role_calls"]) for x in r["reps"]]
        print(f"| {r['name']} | {r['replicas']} | 1 | {r['jobs']} | {r['assets']} ({r['errors']}) | {r['wall']:.1f} "
              f"| {' / '.join(map(str, calls))} | {max(calls) if calls else '–'} |")
    print()
    print(f"Storage: s3_compatible at moto ({MOTO}), IAM policy enforcement "
          f"{'on' if integ['enforced'] else 'off'} during the runs; the worker's base identity is an IAM user "
          f"allowed only sts:AssumeRole, the role's trust requires the ExternalId.")
    print()


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--bulk", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--s3s", required=True)
    ap.add_argument("--sparse", nargs="*", default=[])
    ap.add_argument("--replicas", default=os.environ.get("BENCH_REPLICAS", "1,2"))
    ap.add_argument("--modes", default=os.environ.get("BENCH_MODES", "ranged,full"))
    ap.add_argument("--sts-assets", type=int, default=int(os.environ.get("BENCH_STS_ASSETS", "100")))
    a = ap.parse_args()
    a.bin, a.work = os.path.abspath(a.bin), os.path.abspath(a.work)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        body(a)
    finally:
        cleanup()


def body(a):
    items = load_set(a.bulk, a.sparse)
    root = os.path.join(a.work, "s3root")
    stage_bucket(root, items)
    port = free_port()
    s3s = subprocess.Popen([a.s3s, "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
                            "--secret-key", S3_SECRET, root],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(a.work, "s3s-fs.log"), "w"))
    CHILDREN.append(s3s)
    global S3S_PID
    S3S_PID = s3s.pid
    if not wait_port(port):
        sys.exit("s3s-fs did not start listening")
    endpoint = f"http://127.0.0.1:{port}"
    storage = {"provider": "s3_compatible", "id": "int-bench-s3s", "org_id": "org-bench", "region": "us-east-1",
               "endpoint": endpoint, "path_style": True, "buckets": [BUCKET],
               "access": {"type": "iam_user", "access_key_id": S3_KEY, "secret_ref": "env:BENCH_S3_SECRET"}}
    # The org's secret (ORG_SECRET_<ORG>__<NAME>) and the loopback servers admitted by
    # the operator's allow-list, as an on-premises MinIO would be.
    env = {"ORG_SECRET_ORG_BENCH__BENCH_S3_SECRET": S3_SECRET, "ALLOWED_ENDPOINTS": "127.0.0.1"}
    runs = []
    for reps in [int(x) for x in a.replicas.split(",") if x]:
        for mode in [m for m in a.modes.split(",") if m]:
            name = f"r{reps}-{mode}"
            # A 4 GiB object downloaded whole is not what full mode is measured on.
            subset = items if mode == "ranged" else [it for it in items if not it[4]]
            files, by_id = write_jobs(os.path.join(a.work, "jobs", name), name, subset, storage,
                                      lambda k: f"s3://{BUCKET}/{k}")
            job_ids = [os.path.basename(f)[:-5] for f in files]
            r = run_pipeline(a, name, reps, mode, files, len(by_id), job_ids, env)
            r["by_id"] = by_id
            runs.append(r)

    sts_runs, integ = [], None
    if a.sts_assets > 0:
        try:
            small = pick_small(items, a.sts_assets)
            run = f"{os.getpid():x}{int(time.time()) % 100000:x}"
            integ = moto_setup(small, run)
            dstorage = {"provider": "s3_compatible", "id": "int-bench-delegated", "org_id": "org-bench",
                        "region": "us-east-1", "endpoint": MOTO, "path_style": True, "buckets": [integ["bucket"]],
                        "access": {"type": "iam_delegated", "role_arn": integ["role"],
                                   "external_id": integ["external_id"]}}
            denv = {"AWS_ACCESS_KEY_ID": integ["key"], "AWS_SECRET_ACCESS_KEY": integ["secret"],
                    "AWS_ENDPOINT_URL": MOTO, "AWS_REGION": "us-east-1", "ALLOWED_ENDPOINTS": "127.0.0.1"}
            for reps in (1, 2):
                name = f"sts-r{reps}"
                files, by_id = write_jobs(os.path.join(a.work, "jobs", name), name, small, dstorage,
                                          lambda k: f"s3://{integ['bucket']}/{k}")
                job_ids = [os.path.basename(f)[:-5] for f in files]
                r = run_pipeline(a, name, reps, "ranged", files, len(by_id), job_ids, denv)
                r["by_id"], r["jobs"] = by_id, len(files)
                sts_runs.append(r)
        except Exception as e:  # the main tables stand without it; say what failed
            log(f"delegated run failed: {type(e).__name__}: {e}")
            integ = integ or {"enforced": False, "error": f"{type(e).__name__}: {e}"}
        except SystemExit as e:
            log(f"delegated run failed: {e}")
            integ = integ or {"enforced": False, "error": str(e)}
        finally:
            if integ and "reset_auth" in integ:
                integ["reset_auth"]("0")  # enforcement back on, as the tests leave moto

    table_a(runs + sts_runs)
    by = {(r["replicas"], r["mode"]): r for r in runs}
    for reps in sorted({r["replicas"] for r in runs}):
        if (reps, "ranged") in by and (reps, "full") in by:
            table_b(by[(reps, "ranged")], by[(reps, "full")])
            break
    if sts_runs:
        table_c(sts_runs, integ)
    elif integ and "error" in integ:
        print(f"### C. STS: the delegated run failed: {integ['error']}")


if __name__ == "__main__":
    main()
