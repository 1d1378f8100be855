#!/usr/bin/env bash
# ctx_cross.sh — optional check of the aarch64 context switch
# (engine/ctx_aarch64.S): builds spec/c/ctx_check.c with the aarch64 cross
# compiler, statically, into build/cross/ and runs it under qemu-aarch64
# (user mode), once per optimisation level in CTX_CROSS_OPT_LEVELS.
#
# If the cross toolchain or qemu is missing it says how to install them and
# exits 0 ("skipped"): the check is optional (make check-aarch64).
#
# Environment: CROSS_CC (default aarch64-linux-gnu-gcc), QEMU_AARCH64 (default
# qemu-aarch64, else qemu-aarch64-static), CTX_CROSS_OPT_LEVELS (default
# "-O0 -O2"), EXTRA_CFLAGS (appended, e.g. -mbranch-protection=standard).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/build/cross"
cross_cc="${CROSS_CC:-aarch64-linux-gnu-gcc}"
opt_levels="${CTX_CROSS_OPT_LEVELS:--O0 -O2}"
install_cmd="sudo apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
install_alt="(or qemu-user-static instead of qemu-user)"

skip() {
    echo "ctx_cross: $1"
    echo "ctx_cross: to enable this check: $install_cmd"
    echo "ctx_cross:   $install_alt"
    echo "ctx_cross: aarch64 context check skipped"
    exit 0
}

qemu="${QEMU_AARCH64:-}"
if [[ -z "$qemu" ]]; then
    for candidate in qemu-aarch64 qemu-aarch64-static; do
        if command -v "$candidate" >/dev/null 2>&1; then
            qemu="$candidate"
            break
        fi
    done
fi
command -v "$cross_cc" >/dev/null 2>&1 || skip "no cross compiler ($cross_cc)"
if [[ -z "$qemu" ]] || ! command -v "$qemu" >/dev/null 2>&1; then
    skip "no qemu-aarch64 (or qemu-aarch64-static)"
fi

mkdir -p "$out"

# A toolchain without the aarch64 C library cannot link anything: that is a
# missing package, not a failure of the check.
probe_src="$out/toolchain_probe.c"
printf 'int main(void) { return 0; }\n' >"$probe_src"
if ! "$cross_cc" -static -o "$out/toolchain_probe" "$probe_src" >"$out/toolchain_probe.log" 2>&1; then
    skip "$cross_cc cannot link a static program (see $out/toolchain_probe.log)"
fi
if ! "$qemu" "$out/toolchain_probe"; then
    skip "$qemu cannot run a static aarch64 program"
fi

status=0
for opt in $opt_levels; do
    exe="$out/ctx_check$opt"
    # shellcheck disable=SC2086 # EXTRA_CFLAGS is a list of flags
    "$cross_cc" -std=c11 -Wall -Wextra -Werror "$opt" -static ${EXTRA_CFLAGS:-} \
        -o "$exe" \
        "$root/spec/c/ctx_check.c" "$root/engine/ctx.c" "$root/engine/ctx_aarch64.S" -lm
    echo "ctx_cross: $qemu $exe ($opt)"
    if ! "$qemu" "$exe"; then
        echo "ctx_cross: FAILED at $opt"
        status=1
    fi
done
if [[ $status -eq 0 ]]; then
    echo "ctx_cross: aarch64 context check passed ($opt_levels)"
fi
exit $status
