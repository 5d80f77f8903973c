#!/usr/bin/env bash
# Coverage-guided fuzzing of the probe with AFL++ (cargo-afl, stable toolchain). Not part
# of CI. On a bare machine it installs cargo-afl into ./.tools and builds AFL++ once.
#
#   scripts/fuzz.sh TARGET SECONDS   one target for a time budget (resumes a previous run)
#   scripts/fuzz.sh all SECONDS      every target in turn, SECONDS each
#   scripts/fuzz.sh triage [DIR|FILE...]  every crash/hang (default: all under the output
#                                    folder) through probe_one: answer, time, peak RSS; and
#                                    through its target's harness: why it aborted
#   scripts/fuzz.sh tmin TARGET FILE OUT   minimise one finding with afl-tmin
#   scripts/fuzz.sh build            build the instrumented targets only
#
# TARGET is one of: image video audio text dicom pdf probe (probe = detection + any extractor).
# Findings land in crates/probe/fuzz/out/TARGET/default/{crashes,hangs}/ (FUZZ_OUT moves
# them). The harness aborts on a panic, on an input over FUZZ_BUDGET_MS (2000) and on an
# allocation past FUZZ_MEM_MB (512) of address space; FUZZ_CHECK_VALUES=1 also aborts on
# implausible successes (0 px, 1e19 s), for campaigns and triage alike:
#   FUZZ_CHECK_VALUES=1 FUZZ_OUT=crates/probe/fuzz/out/values scripts/fuzz.sh probe 600
# See crates/probe/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_DIR=$ROOT/crates/probe/fuzz
OUT=${FUZZ_OUT:-$FUZZ_DIR/out}
TARGETS=(image video audio text dicom pdf probe)
CARGO_AFL_VERSION=0.18.2
export PATH=$ROOT/.tools/bin:$PATH

die() { echo "fuzz: $*" >&2; exit 1; }

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

is_target() {
    local t
    for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}

# cargo-afl from crates.io, then AFL++ built from the sources it ships (no download).
ensure_afl() {
    if ! cargo afl --version >/dev/null 2>&1; then
        echo "fuzz: installing cargo-afl $CARGO_AFL_VERSION into .tools" >&2
        command -v cc >/dev/null && command -v make >/dev/null || {
            command -v apt-get >/dev/null || die "cargo-afl needs a C compiler and make"
            apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
        }
        cargo install cargo-afl --version "$CARGO_AFL_VERSION" --locked --root "$ROOT/.tools"
    fi
    # Installing cargo-afl builds AFL++ too; a rustc upgrade needs a rebuild.
    local rt
    rt="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/rustc-$(rustc -V | awk '{print $2}')-*/afl.rs-$CARGO_AFL_VERSION/afl-llvm/afl-compiler-rt.o"
    if ! compgen -G "$rt" >/dev/null; then
        echo "fuzz: building AFL++ (cargo afl config --build, a few minutes)" >&2
        cargo afl config --build --force
    fi
}

build() {
    ensure_afl
    (cd "$FUZZ_DIR" && cargo afl build --release --bins)
}

# Seeds are the fixtures themselves, copied (never committed twice): a family target
# gets its data type's folder and its bad/ files, `probe` gets everything.
seed() {
    local t=$1 dir=$2 f base
    rm -rf "$dir" && mkdir -p "$dir"
    while IFS= read -r -d '' f; do
        base=${f#"$ROOT/fixtures/assets/"}
        case $t in
            probe) ;;
            *) [[ $base == "$t/"* || $base == "bad/$t-"* || $base == "bad/fuzz-$t-"* ]] || continue ;;
        esac
        [[ $(basename "$f") == ORIGIN*.md ]] && continue
        # Empty files teach nothing; big ones cost AFL seconds per mutation (a 120 KB
        # PDF page tree takes 0.5 s to probe: 2 executions a second).
        [[ -s $f && $(stat -c %s "$f") -le 32768 ]] || continue
        cp "$f" "$dir/${base//\//_}"
    done < <(find "$ROOT/fixtures/assets" -type f -print0 | sort -z)
    [[ -n $(ls -A "$dir") ]] || die "no seeds for $t"
}

# Where the harness writes each input (tmpfs when there is one), removed on exit: a
# crashing input's copy stays behind otherwise, thousands of them under afl-tmin.
scratch_dir() {
    local base=${TMPDIR:-/tmp}
    [[ -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
    mktemp -d "$base/asset-probe-fuzz.XXXXXX"
}

campaign() {
    local t=$1 secs=$2 bin=$FUZZ_DIR/target/release/$1
    local out=$OUT/$t seeds=$OUT/$t.seeds
    seed "$t" "$seeds"
    mkdir -p "$out"
    local scratch
    scratch=$(scratch_dir)
    echo "fuzz: $t for ${secs}s, $(ls "$seeds" | wc -l) seeds, output in $out/default" >&2
    # -t: AFL's own hang limit, a backstop above the harness's FUZZ_BUDGET_MS abort.
    # -m none: the harness limits its address space itself (RLIMIT_AS).
    # AFL_IGNORE_SEED_PROBLEMS: bad/ seeds that crash today's code must not stop the run.
    local env=(AFL_AUTORESUME=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_IGNORE_SEED_PROBLEMS=1
        AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_FAST_CAL=1 FUZZ_TMPDIR="$scratch")
    [[ -t 1 ]] || env+=(AFL_NO_UI=1)
    env "${env[@]}" cargo afl fuzz -i "$seeds" -o "$out" -V "$secs" -t 5000 -m none -- "$bin" \
        || echo "fuzz: afl-fuzz exited with $? for $t" >&2
    rm -rf "$scratch"
    summary "$t"
}

summary() {
    local t=$1 d=$OUT/$1/default stats
    stats=$d/fuzzer_stats
    [[ -f $stats ]] || { echo "fuzz: $t: no fuzzer_stats in $d" >&2; return; }
    local get
    get() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$stats"; }
    printf 'fuzz: %-6s run %ss, %s execs (%s/s overall, %s/s last), corpus %s, crashes %s (saved %s), hangs %s (saved %s)\n' \
        "$t" "$(get run_time)" "$(get execs_done)" "$(get execs_per_sec)" "$(get execs_ps_last_min)" \
        "$(get corpus_count)" "$(get saved_crashes)" "$(ls "$d/crashes" 2>/dev/null | grep -c '^id' || true)" \
        "$(get saved_hangs)" "$(ls "$d/hangs" 2>/dev/null | grep -c '^id' || true)"
    echo "      crashes: $d/crashes/   hangs: $d/hangs/"
}

# Each finding through the release probe_one (what production would answer, how long,
# how much memory) and through its target's harness (why the fuzzer called it a crash).
triage() {
    local files=() f
    if (($#)); then
        for f in "$@"; do
            if [[ -d $f ]]; then
                while IFS= read -r -d '' g; do files+=("$g"); done < <(find "$(realpath "$f")" -type f -name 'id:*' -print0 | sort -z)
            else
                files+=("$(realpath "$f")")
            fi
        done
    else
        while IFS= read -r -d '' g; do files+=("$g"); done < <(
            find "$OUT" -path '*/default/crashes/id:*' -o -path '*/default/hangs/id:*' 2>/dev/null | tr '\n' '\0' | sort -z)
    fi
    ((${#files[@]})) || { echo "fuzz: no crashes or hangs under $OUT" >&2; return 0; }
    cargo build -q -p asset-probe --release --example probe_one
    local probe_one=$ROOT/target/release/examples/probe_one tmp
    tmp=$(mktemp -d)
    export FUZZ_TMPDIR=$tmp
    printf '%-60s %-16s %8s %9s  %s\n' FILE ANSWER MS MAXRSS_KB HARNESS
    for f in "${files[@]}"; do
        # 8 GiB of address space and 60 s: enough to see a bomb's size, not to sink the machine.
        (ulimit -v 8388608; timeout 60 /usr/bin/time -v "$probe_one" "$f") >"$tmp/out" 2>"$tmp/err" && rc=0 || rc=$?
        local answer ms rss
        answer=$(grep -o '"code":"[a-z_]*"' "$tmp/out" | head -1 | cut -d'"' -f4 || true)
        [[ -n $answer ]] || { grep -q '"metadata"' "$tmp/out" && answer=ok || answer=-; }
        ms=$(grep -o '"millis":[0-9]*' "$tmp/out" | head -1 | cut -d: -f2 || true)
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/err")
        [[ $rc == 124 ]] && answer="KILLED(60s)"
        [[ $rc -gt 128 && $rc != 124 ]] && answer="SIGNAL$((rc - 128))"
        if grep -q "overflowed its stack" "$tmp/err"; then answer="STACK_OVERFLOW"; fi
        if grep -q "memory allocation of" "$tmp/err"; then answer="ALLOC_FAILED"; fi
        # The harness: the target is the folder under $OUT the file came from.
        local why="-" target
        target=$(realpath --relative-to="$OUT" "$f" 2>/dev/null | cut -d/ -f1)
        is_target "$target" || target=probe
        if [[ -x $FUZZ_DIR/target/release/$target ]]; then
            why=$(timeout 30 "$FUZZ_DIR/target/release/$target" <"$f" 2>&1 >/dev/null |
                grep -m1 -E "asset-probe-fuzz:|panicked at|overflowed|memory allocation" -A1 |
                tr '\n' ' ' | cut -c1-160 || true)
            [[ -n $why ]] || why="(no abort when replayed)"
        fi
        printf '%-60s %-16s %8s %9s  %s\n' "${f#"$OUT/"}" "$answer" "${ms:--}" "${rss:--}" "$why"
    done
    rm -rf "$tmp"
}

case ${1:-} in
    build) build ;;
    triage) shift; triage "$@" ;;
    tmin)
        (($# == 4)) || usage
        is_target "$2" || die "unknown target $2"
        ensure_afl
        scratch=$(scratch_dir)
        AFL_SKIP_CPUFREQ=1 FUZZ_TMPDIR=$scratch cargo afl tmin -t 5000 -m none -i "$3" -o "$4" -- "$FUZZ_DIR/target/release/$2" \
            || echo "fuzz: afl-tmin exited with $?" >&2
        rm -rf "$scratch"
        ;;
    all)
        (($# == 2)) || usage
        build
        for t in "${TARGETS[@]}"; do campaign "$t" "$2"; done
        ;;
    "" | -h | --help) usage ;;
    *)
        (($# == 2)) || usage
        is_target "$1" || die "unknown target $1 (one of: ${TARGETS[*]} all triage tmin build)"
        build
        campaign "$1" "$2"
        ;;
esac
