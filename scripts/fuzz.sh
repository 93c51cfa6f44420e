#!/usr/bin/env bash
# Fuzz the pure parsers (fuzz/fuzz_targets/*.rs) with cargo-fuzz / libFuzzer.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Runs every target for SECONDS_PER_TARGET seconds, one after the other, and
# exits non-zero if any of them crashes, hangs (-timeout=5), or runs out of
# memory (-rss_limit_mb=2048). Each target's live corpus is fuzz/corpus/<t>/
# (gitignored), seeded from the committed fuzz/seeds/<t>/; crashing inputs go
# to fuzz/artifacts/<t>/ (gitignored) and full logs to fuzz/target/logs/.
#
# Works on the stable toolchain: cargo-fuzz needs nightly `-Z` flags, which
# RUSTC_BOOTSTRAP=1 unlocks.
#
# Environment:
#   FUZZ_TARGETS     space-separated targets to run (default: all)
#   FUZZ_SANITIZER   address (default) or none (about twice as fast)
#   FUZZ_BUILD_JOBS  parallel rustc jobs for the build (default 1)
#   FUZZ_ARGS        extra libFuzzer flags appended to every run
set -uo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="$root/fuzz"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$fuzz/target"
sanitizer="${FUZZ_SANITIZER:-address}"
build_jobs="${FUZZ_BUILD_JOBS:-1}"
export CARGO_BUILD_JOBS="$build_jobs"
targets="${FUZZ_TARGETS:-clienthello h1_plan quic_initial table_row proxy_protocol}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked -j "$build_jobs" || {
        echo "cargo install cargo-fuzz failed" >&2
        exit 2
    }
fi

cd "$root" || exit 2

# Debug assertions on: integer overflow is a panic, as in a debug build.
build_flags=(--sanitizer "$sanitizer" --debug-assertions)

echo "== building fuzz targets (sanitizer=$sanitizer, jobs=$build_jobs)" >&2
if ! nice -n 10 cargo fuzz build "${build_flags[@]}"; then
    echo "cargo fuzz build failed" >&2
    exit 2
fi

# Largest input per target: a ClientHello may span several records (up to
# 16 KiB of hello); a PROXY header may be up to 4 KiB (probe a bit past it).
max_len() {
    case "$1" in
        clienthello) echo 17408 ;;
        proxy_protocol) echo 4352 ;;
        *) echo 4096 ;;
    esac
}

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$host/release"

logs="$CARGO_TARGET_DIR/logs"
mkdir -p "$logs"
failed=0
summary=()
for t in $targets; do
    corpus="$fuzz/corpus/$t"
    mkdir -p "$corpus" "$fuzz/artifacts/$t"
    if [ -d "$fuzz/seeds/$t" ]; then
        cp -n "$fuzz/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log="$logs/$t.log"
    echo "== fuzzing $t for ${secs}s (log: $log)" >&2
    # Run the binary built above rather than `cargo fuzz run`, which would
    # rebuild (and fuzz a different snapshot) if src/ changed meanwhile.
    # shellcheck disable=SC2086
    "$bin_dir/$t" \
        -artifact_prefix="$fuzz/artifacts/$t/" \
        -max_total_time="$secs" \
        -timeout=5 \
        -rss_limit_mb=2048 \
        -max_len="$(max_len "$t")" \
        -print_final_stats=1 \
        ${FUZZ_ARGS:-} \
        "$corpus" >"$log" 2>&1
    rc=$?

    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)"
    if [ -z "$execs" ]; then
        # No final stats (the process died): take the last status line.
        execs="$(grep -oE '^#[0-9]+' "$log" | tail -n1 | tr -d '#')"
        rate="$(grep -oE 'exec/s: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+')"
    fi
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+')"
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)"

    if [ "$rc" -eq 0 ]; then
        result="ok"
    else
        failed=1
        if grep -q 'ERROR: libFuzzer: timeout' "$log"; then
            result="HANG (>5s)"
        elif grep -qE 'ERROR: libFuzzer: out-of-memory|malloc\(.*\) exceeds limit' "$log"; then
            result="OOM (>2048 MB)"
        elif grep -qE 'panicked at|deadly signal|ERROR: AddressSanitizer' "$log"; then
            result="CRASH"
        else
            result="FAILED (rc=$rc)"
        fi
        # "thread '...' panicked at FILE:LINE:COL:" then the message.
        where="$(grep -m1 -A1 -E 'panicked at' "$log" |
            sed -e 's/^.*panicked at //' -e 's/:$//' | paste -sd' ' -)"
        [ -n "$where" ] && result="$result at $where"
        [ -n "$artifact" ] && result="$result; input: $artifact"
        [ -n "$artifact" ] && echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -a $t $artifact" >&2
        echo "---- $t: last lines of $log" >&2
        tail -n 40 "$log" >&2
        if [ -n "$artifact" ] && [ -f "$artifact" ]; then
            echo "---- $t: failing input ($(wc -c <"$artifact") bytes, hex; first 4 KiB)" >&2
            head -c 4096 "$artifact" | od -An -v -tx1 | tr -d ' \n' | fold -w 128 >&2
            echo >&2
        fi
    fi
    line="$(printf '%-15s %-10s execs=%-10s exec/s=%-8s cov=%-6s %s' \
        "$t" "${secs}s" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$result")"
    summary+=("$line")
    echo "$line"
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
