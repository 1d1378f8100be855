#!/usr/bin/env bash
# bench/run.sh — runs every benchmark of bench/benchmarks.txt under weft and
# under Go and prints the medians side by side.
#
#   bash bench/run.sh            (normally via `make bench`, which first
#                                 builds the C benchmarks with bench/bench.mk)
#
# bench/benchmarks.txt has one benchmark a line, of one of two kinds:
#   name<TAB>weft command<TAB>go command     weft against its Go twin
#   name<TAB>command<TAB>procs=K             scaling: the command with
#       BENCH_PROCS processors against the same command with K, reported
#       as the time ratio t(BENCH_PROCS) / t(K) (below 1: more processors
#       help) and its inverse, the speedup; the command must do the same
#       total work whatever the processor count
# with blank lines and #-comments ignored. Commands are run with bash from
# the repository root, with BUILD (the build directory, default "build")
# exported so that they can say "$BUILD/bench/x", and must print a line
# "<name> <ns_per_op>" on stdout (the last line of that shape is used). A
# command that exits non-zero, times out or prints no such line makes its
# row FAILED. Scaling rows are listed in a table of their own and left out
# of the weft/Go summary.
#
# Environment:
#   BENCH_RUNS     runs of each command (default 5), weft and Go alternating
#   BENCH_PROCS    WEFT_PROCS and GOMAXPROCS for every run (default 2;
#                  K instead for the second command of a scaling row)
#   BENCH_TIMEOUT  seconds before a single run is killed (default 120)
#   BENCH_ONLY     if set, a regular expression: only benchmarks whose name
#                  matches it are run
#   BENCH_TABLE    the table to run (default bench/benchmarks.txt)
#   BENCH_TSV      if set, a file that receives one line per benchmark run,
#                  name<TAB>second<TAB>weft median<TAB>second median<TAB>ratio
#                  where second is "go" or "procs=K" (a scaling row), the
#                  ratio is unrounded, FAILED stands for a missing number
#                  and n/a for a ratio with a zero median
#                  (bench/results.sh reads it)
#   BUILD          build directory (default build)
#
# Exits 0 if every benchmark ran on both sides, non-zero otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD=${BUILD:-build}
export BUILD
RUNS=${BENCH_RUNS:-5}
PROCS=${BENCH_PROCS:-2}
TIMEOUT=${BENCH_TIMEOUT:-120}
ONLY=${BENCH_ONLY:-}
TABLE=${BENCH_TABLE:-bench/benchmarks.txt}
TSV=${BENCH_TSV:-}

die() { echo "bench: $*" >&2; exit 1; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"
[[ $PROCS =~ ^[1-9][0-9]*$ ]] || die "BENCH_PROCS must be a positive integer, not '$PROCS'"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_TIMEOUT must be a positive integer, not '$TIMEOUT'"
[[ -f $TABLE ]] || die "$TABLE not found"
if [[ -n $TSV ]]; then : >"$TSV" || die "cannot write BENCH_TSV file '$TSV'"; fi

if ! command -v go >/dev/null 2>&1; then
    echo "bench: the Go toolchain is needed for the Go twins; install it with:" >&2
    echo "    sudo apt-get install golang-go" >&2
    exit 1
fi

# ---- build the Go twins (offline, caches under $BUILD) ----------------------
case $BUILD in /*) BUILD_ABS=$BUILD ;; *) BUILD_ABS=$ROOT/$BUILD ;; esac
GOOUT=$BUILD_ABS/bench/go
mkdir -p "$GOOUT" "$BUILD_ABS/go/cache" "$BUILD_ABS/go/path"
export GOCACHE="$BUILD_ABS/go/cache"
export GOPATH="$BUILD_ABS/go/path"
export GOMODCACHE="$GOPATH/pkg/mod"
# bench/go is a module with no dependencies: nothing is ever downloaded.
export GO111MODULE=on GOPROXY=off GOSUMDB=off GOFLAGS='' GOWORK=off GOTOOLCHAIN=local

for dir in bench/go/*/; do
    name=$(basename "$dir")
    [[ -f $dir/main.go ]] || continue
    if ! (cd bench/go && go build -trimpath -buildvcs=false -o "$GOOUT/$name" "./$name"); then
        die "go build of bench/go/$name failed"
    fi
done

# ---- helpers ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

have_timeout=0
command -v timeout >/dev/null 2>&1 && have_timeout=1

# run_one CMD: runs CMD once; prints its ns/op, or returns non-zero after
# reporting on stderr why there is none.
run_one() {
    local cmd=$1 rc=0 ns
    if ((have_timeout)); then
        timeout -k 5 "$TIMEOUT" bash -c "$cmd" >"$TMP/out" 2>"$TMP/err" </dev/null || rc=$?
    else
        bash -c "$cmd" >"$TMP/out" 2>"$TMP/err" </dev/null || rc=$?
    fi
    if ((rc != 0)); then
        if ((rc == 124)); then
            echo "    '$cmd' timed out after ${TIMEOUT}s" >&2
        else
            echo "    '$cmd' exited with status $rc" >&2
        fi
        sed -n '1,10s/^/      | /p' "$TMP/err" >&2
        return 1
    fi
    ns=$(grep -E '^[^[:space:]]+ [0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$' "$TMP/out" | tail -n 1 |
        awk '{print $2}') || true
    if [[ -z $ns ]]; then
        echo "    '$cmd' printed no '<name> <ns_per_op>' line" >&2
        sed -n '1,10s/^/      | /p' "$TMP/out" "$TMP/err" >&2
        return 1
    fi
    echo "$ns"
}

# run_second: the second command of the current row, which for a scaling
# row is its first command on $base processors.
run_second() {
    if [[ -n $base ]]; then
        WEFT_PROCS=$base GOMAXPROCS=$base run_one "$wcmd"
    else
        run_one "$gcmd"
    fi
}

# median of the numbers given as arguments
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) printf "%.1f", v[(NR + 1) / 2];
              else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---- header -------------------------------------------------------------------
. bench/machine.sh
cpu=$(bench_cpu_model)
echo "weft benchmarks: $(date '+%Y-%m-%d %H:%M:%S %Z') | $(uname -m), nproc $(nproc), CPU: $cpu | $(go version | awk '{print $3}') | procs $PROCS, $RUNS runs each"

# One cache line moved between two cores (bench/c/linexfer.c), at the start
# and at the end: on a VM it changes with where the host runs the vCPUs,
# and every benchmark that talks across processors pays it.
linexfer() {
    local out
    out=$("$BUILD/bench/linexfer" 2>/dev/null) && [[ $out == linexfer\ * ]] &&
        echo "line transfer ($1): ${out#linexfer } ns between two cores (bench/c/linexfer.c)"
    return 0
}
linexfer start

export WEFT_PROCS=$PROCS GOMAXPROCS=$PROCS

# ---- run ----------------------------------------------------------------------
names=() weft_med=() go_med=() row_ratio=() ratios=()
scale_names=() scale_med=() scale_base=() scale_base_med=() scale_ratio=() scale_speedup=()
comment_re='^[[:space:]]*(#|$)'
any_failed=0
lineno=0
selected=0
while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    line=${line%$'\r'}
    [[ $line =~ $comment_re ]] && continue
    IFS=$'\t' read -r name wcmd gcmd extra <<<"$line" || true
    if [[ -z $name || -z ${wcmd:-} || -z ${gcmd:-} || -n ${extra:-} ]]; then
        die "$TABLE:$lineno: want 'name<TAB>weft command<TAB>go command' or 'name<TAB>command<TAB>procs=K'"
    fi
    if [[ -n $ONLY ]] && ! [[ $name =~ $ONLY ]]; then
        continue
    fi
    base=
    [[ $gcmd =~ ^procs=([1-9][0-9]*)$ ]] && base=${BASH_REMATCH[1]}
    selected=$((selected + 1))

    echo "  $name ..." >&2
    wv=() gv=() wfail=0 gfail=0
    for ((r = 1; r <= RUNS; r++)); do
        if ((!wfail)); then
            if ns=$(run_one "$wcmd"); then wv+=("$ns"); else wfail=1; fi
        fi
        if ((!gfail)); then
            if ns=$(run_second); then gv+=("$ns"); else gfail=1; fi
        fi
        ((wfail && gfail)) && break
    done

    w=FAILED g=FAILED ratio=FAILED speedup=FAILED exact=FAILED
    ((wfail)) || w=$(median "${wv[@]}")
    ((gfail)) || g=$(median "${gv[@]}")
    if ((wfail || gfail)); then
        any_failed=1
    else
        if [[ -n $base ]]; then
            echo "    procs $PROCS: ${wv[*]}   procs $base: ${gv[*]}" >&2
        else
            echo "    weft: ${wv[*]}   go: ${gv[*]}" >&2
        fi
        # exact ratio of the medians for the summary, two decimals for the tables
        exact=$(awk -v a="$w" -v b="$g" 'BEGIN { if (a > 0 && b > 0) printf "%.6g", a / b; else print "n/a" }')
        if [[ $exact == n/a ]]; then
            ratio=n/a speedup=n/a
        elif [[ -n $base ]]; then
            ratio=$(awk -v x="$exact" 'BEGIN { printf "%.2f", x }')
            speedup=$(awk -v x="$exact" 'BEGIN { printf "%.2fx", 1 / x }')
        else
            ratio=$(awk -v x="$exact" 'BEGIN { printf "%.2fx", x }')
            ratios+=("$exact")
        fi
    fi
    if [[ -n $base ]]; then
        scale_names+=("$name") scale_med+=("$w") scale_base+=("$base") scale_base_med+=("$g")
        scale_ratio+=("$ratio") scale_speedup+=("$speedup")
    else
        names+=("$name") weft_med+=("$w") go_med+=("$g")
        row_ratio+=("$ratio")
    fi
    if [[ -n $TSV ]]; then
        second=go
        [[ -n $base ]] && second=procs=$base
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$second" "$w" "$g" "$exact" >>"$TSV"
    fi
done <"$TABLE"

# ---- tables -------------------------------------------------------------------
total=${#names[@]}
if ((total > 0)); then
    w0=9
    for n in "${names[@]}"; do ((${#n} > w0)) && w0=${#n}; done
    printf "%-${w0}s  %16s  %16s  %12s\n" benchmark "weft ns/op (med)" "Go ns/op (med)" "weft/Go"
    printf "%-${w0}s  %16s  %16s  %12s\n" "$(printf '%*s' "$w0" '' | tr ' ' -)" \
        ---------------- ---------------- ------------
    for i in "${!names[@]}"; do
        printf "%-${w0}s  %16s  %16s  %12s\n" "${names[$i]}" "${weft_med[$i]}" "${go_med[$i]}" "${row_ratio[$i]}"
    done

    ok=${#ratios[@]}
    if ((ok > 0)); then
        printf '%s\n' "${ratios[@]}" | awk -v total="$total" -v ok="$ok" '
            { if ($1 <= 1.0) at_or_below++; s += log($1) }
            END { printf "summary: %d of %d benchmarks at or below 1.0x Go; geometric mean weft/Go %.2fx", at_or_below, ok, exp(s / ok)
                  if (total > ok) printf "; %d of %d without a ratio (FAILED)", total - ok, total
                  printf "\n" }'
    else
        echo "summary: no benchmark completed on both sides ($total listed)"
    fi
fi

if ((${#scale_names[@]} > 0)); then
    ((total > 0)) && echo
    echo "scaling: the same work on $PROCS processors and on 'base' processors; time ratio = t($PROCS) / t(base)"
    w0=9
    for n in "${scale_names[@]}"; do ((${#n} > w0)) && w0=${#n}; done
    printf "%-${w0}s  %16s  %4s  %16s  %10s  %8s\n" benchmark "ns/op (med)" base "base ns/op (med)" "time ratio" speedup
    printf "%-${w0}s  %16s  %4s  %16s  %10s  %8s\n" "$(printf '%*s' "$w0" '' | tr ' ' -)" \
        ---------------- ---- ---------------- ---------- --------
    for i in "${!scale_names[@]}"; do
        printf "%-${w0}s  %16s  %4s  %16s  %10s  %8s\n" "${scale_names[$i]}" "${scale_med[$i]}" \
            "${scale_base[$i]}" "${scale_base_med[$i]}" "${scale_ratio[$i]}" "${scale_speedup[$i]}"
    done
fi

linexfer end

if ((selected == 0)); then
    die "no benchmarks selected from $TABLE"
fi
exit $any_failed
