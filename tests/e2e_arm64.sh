#!/usr/bin/env bash
# e2e_arm64: the NEON kernels, built for aarch64 and run under user-mode
# QEMU. test_kernels compares every kernel with a double-precision loop, the
# SIMD path with the portable one, and 1/2/3-thread results bit for bit; here
# it must select "neon" and pass all of that, once with the dot-product
# extension of QEMU's default CPU and once capped at plain NEON
# (MDI_SIMD=neon). Each of its PASS/FAIL lines is forwarded as
# "PASS: [arm64] name" ("[arm64] [neon] name" for the second run). Every
# src/*.c is also compiled for aarch64 and must give no warning.
#
# Optional: it needs a cross compiler, QEMU and Debian's arm64 OpenBLAS
# (multiarch), and prints one SKIP line when any of them is missing:
#
#   apt-get install -y gcc-aarch64-linux-gnu qemu-user
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install -y libc6-dev:arm64 libopenblas-dev:arm64 libjansson-dev:arm64
#
# ARM64_CFLAGS adds flags to every aarch64 compile, e.g. -I for the arm64
# headers of libcurl, libmicrohttpd or PCRE2 unpacked elsewhere; a src/*.c
# whose headers cannot be found is reported on a SKIP line.
set -u
cd "$(dirname "$0")/.." || exit 1

CC=aarch64-linux-gnu-gcc
MULTIARCH=/usr/lib/aarch64-linux-gnu
QEMU=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "SKIP: arm64: $CC not installed (apt-get install gcc-aarch64-linux-gnu)"
    exit 0
fi
if [ -z "$QEMU" ]; then
    echo "SKIP: arm64: qemu-aarch64 not installed (apt-get install qemu-user)"
    exit 0
fi
# Debian ships the threaded build in openblas-pthread/; the others work too.
BLAS_INC="" BLAS_LIB=""
for v in openblas-pthread openblas-openmp openblas-serial; do
    if [ -f "/usr/include/aarch64-linux-gnu/$v/cblas.h" ] && [ -f "$MULTIARCH/$v/libopenblas.so" ]; then
        BLAS_INC=/usr/include/aarch64-linux-gnu/$v BLAS_LIB=$MULTIARCH/$v
        break
    fi
done
if [ -z "$BLAS_LIB" ]; then
    echo "SKIP: arm64: no arm64 OpenBLAS under $MULTIARCH (apt-get install libopenblas-dev:arm64)"
    exit 0
fi

if [ ! -f /usr/include/aarch64-linux-gnu/bits/libc-header-start.h ] &&
   [ ! -f /usr/aarch64-linux-gnu/include/bits/libc-header-start.h ]; then
    echo "SKIP: arm64: no arm64 C library headers (apt-get install libc6-dev:arm64)"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
FLAGS="-std=c11 -D_GNU_SOURCE -pthread -O2 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes"
# shellcheck disable=SC2086 # FLAGS and ARM64_CFLAGS are lists of flags
build() { "$CC" $FLAGS ${ARM64_CFLAGS:-} -I"$BLAS_INC" "$@"; }

# ---- the kernels test, built and run for aarch64 ----

if ! build -Isrc -Itests tests/test_kernels.c src/kernels_*.c src/dtype.c src/util.c -L"$BLAS_LIB" -lopenblas -lm \
        -o "$tmp/test_kernels" >"$tmp/build.err" 2>&1; then
    echo "FAIL: arm64: test_kernels does not build for aarch64: $(grep -m1 error "$tmp/build.err")"
    exit 0
fi
if [ -s "$tmp/build.err" ]; then
    echo "FAIL: arm64: test_kernels builds for aarch64 without warnings: $(grep -c 'warning:' "$tmp/build.err") warnings"
    sed 's/^/   /' "$tmp/build.err" | head -n 20
else
    echo "PASS: arm64: test_kernels builds for aarch64 without warnings"
fi

# Without binfmt, this never re-executes itself; the ARM path of
# kernels_fix_openblas_coretype must not try (it compiles to nothing).
if command -v aarch64-linux-gnu-objdump >/dev/null 2>&1; then
    calls=$(aarch64-linux-gnu-objdump -d "$tmp/test_kernels" |
        awk '/<kernels_fix_openblas_coretype>:/ { on = 1; next } on && /^$/ { exit } on' |
        grep -cE '\s(bl|blr|b)\s' || true)
    if [ "$calls" -eq 0 ]; then
        echo "PASS: arm64: kernels_fix_openblas_coretype is a no-op on aarch64"
    else
        echo "FAIL: arm64: kernels_fix_openblas_coretype is a no-op on aarch64: it makes $calls calls"
    fi
fi

# The arm64 OpenBLAS brings the multiarch libc6:arm64, loader included, so
# the program runs with no -L. -L /usr/aarch64-linux-gnu (or QEMU_LD_PREFIX)
# would pair the cross toolchain's ld.so with that libc.so.6, two builds of
# glibc that need not match; with 2.36-8cross1 against 2.36-9+deb12u14 the
# program hangs before main. The OpenBLAS directory is named in case its
# alternative is unset.
start=$(date +%s.%N)
env -u QEMU_LD_PREFIX timeout 300 "$QEMU" -E LD_LIBRARY_PATH="$BLAS_LIB:$MULTIARCH" "$tmp/test_kernels" \
    >"$tmp/run.out" 2>"$tmp/run.err"
rc=$?
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
sed -n -e 's/^\(PASS\|FAIL\|SKIP\): /\1: [arm64] /p' -e 's/^info: /info: [arm64] /p' "$tmp/run.out"
passed=$(grep -c '^PASS:' "$tmp/run.out")
failed=$(grep -c '^FAIL:' "$tmp/run.out")
echo "info: [arm64] test_kernels under $(basename "$QEMU"): $passed passed, $failed failed in ${secs}s"
if { [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; } || [ "$passed" -eq 0 ]; then
    echo "FAIL: arm64: test_kernels exited with status $rc after $passed checks: $(tail -n 1 "$tmp/run.err")"
fi
simd=$(sed -n 's/^info: simd \([a-z0-9]*\)[ ,].*/\1/p' "$tmp/run.out")
if [ "$simd" = neon ]; then
    echo "PASS: arm64: the NEON path is selected"
else
    echo "FAIL: arm64: the NEON path is selected: simd '${simd:-?}'"
fi

# QEMU's default CPU has the dot-product and BF16 extensions: the run above
# took the vdotq_s32 block kernels and the BFDOT BF16 ones. Run again capped
# at plain NEON (MDI_SIMD=neon: test_kernels runs the row-kernel checks) for
# the vmull_s8 and widening ones; its lines come as "[arm64] [neon] name".
if grep -q '^info: features .*dotprod' "$tmp/run.out" || grep -q '^info: simd neon.* bf16' "$tmp/run.out"; then
    grep -q '^info: features .*dotprod' "$tmp/run.out" && echo "PASS: arm64: the NEON dot-product path is selected"
    env -u QEMU_LD_PREFIX timeout 300 "$QEMU" -E LD_LIBRARY_PATH="$BLAS_LIB:$MULTIARCH" -E MDI_SIMD=neon \
        "$tmp/test_kernels" >"$tmp/run2.out" 2>"$tmp/run2.err"
    rc=$?
    sed -n -e 's/^\(PASS\|FAIL\|SKIP\): /\1: [arm64] /p' -e 's/^info: /info: [arm64] /p' "$tmp/run2.out"
    passed=$(grep -c '^PASS:' "$tmp/run2.out")
    failed=$(grep -c '^FAIL:' "$tmp/run2.out")
    echo "info: [arm64] test_kernels with MDI_SIMD=neon: $passed passed, $failed failed"
    if { [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; } || [ "$passed" -eq 0 ]; then
        echo "FAIL: arm64: test_kernels with MDI_SIMD=neon exited with status $rc after $passed checks"
    fi
    if grep -q '^info: \[neon\] features .*dotprod' "$tmp/run2.out"; then
        echo "FAIL: arm64: MDI_SIMD=neon turns the dot-product path off"
    else
        echo "PASS: arm64: MDI_SIMD=neon turns the dot-product path off"
    fi
else
    echo "SKIP: arm64: this QEMU CPU has neither the dot-product nor the BF16 extension; only plain NEON ran"
fi

# ---- the whole library, compiled for aarch64 ----

clean=0 noisy=0 missing=""
for f in src/*.c; do
    if build -fsyntax-only "$f" >"$tmp/cc.err" 2>&1 && [ ! -s "$tmp/cc.err" ]; then
        clean=$((clean + 1))
    elif grep -q 'fatal error: .*No such file' "$tmp/cc.err"; then
        missing="$missing $(basename "$f") ($(sed -n 's/.*fatal error: \([^:]*\):.*/\1/p' "$tmp/cc.err" | head -n 1))"
    else
        noisy=$((noisy + 1))
        echo "FAIL: arm64: $f compiles for aarch64 without warnings"
        sed 's/^/   /' "$tmp/cc.err" | head -n 20
    fi
done
if [ "$noisy" -eq 0 ]; then
    echo "PASS: arm64: $clean src/*.c files compile for aarch64 without warnings"
fi
if [ -n "$missing" ]; then
    echo "SKIP: arm64: not compiled for aarch64, arm64 headers missing:$missing"
fi
exit 0
