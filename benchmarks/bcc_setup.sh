#!/bin/bash
# Make bcc usable for the benchmarks, idempotently, and record the outcome in
# BUILD/bcc.json: {"ok": true, "kernel_source": DIR or null} or
# {"ok": false, "reason": "..."}. Never fails the build: the benchmark table
# then says "bcc: unavailable (reason)".
#
# bcc compiles C at run time against kernel headers. When
# /lib/modules/$(uname -r)/build is missing (as for the 6.18 kernels of these
# VMs), Debian's linux-headers packages for its own kernel (6.1) are extracted
# under BUILD/kernel-headers (no dpkg install) and BCC_KERNEL_SOURCE points
# bcc at the merged tree (the arch package overlaid on the common one).
set -u
BUILD=${1:?usage: bcc_setup.sh BUILD_DIR [PYTHON]}
PY=${2:-/usr/bin/python3}
OUT=$BUILD/bcc.json
HDR=$BUILD/kernel-headers
mkdir -p "$BUILD"

fail() {
    local reason=${1//\"/\'}
    printf '{"ok": false, "reason": "%s"}\n' "$reason" > "$OUT"
    echo "bcc: unavailable ($1)" >&2
    exit 0
}

if ! "$PY" -c 'import bcc' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing python3-bpfcc for the bcc comparison" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-bpfcc >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 &&
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-bpfcc >/dev/null 2>&1; }
    fi
    "$PY" -c 'import bcc' 2>/dev/null || fail "cannot import bcc with $PY (Debian package python3-bpfcc)"
fi

KSRC=null
if [ ! -d "/lib/modules/$(uname -r)/build/include" ]; then
    if [ ! -f "$HDR/.complete" ]; then
        command -v apt-get >/dev/null || fail "no kernel headers for $(uname -r) and no apt-get to fetch Debian's"
        arch=$(dpkg --print-architecture)
        dep() { apt-cache depends "linux-headers-$arch" 2>/dev/null |
                sed -n "s/.*Depends: \(linux-headers-[0-9][^ ]*-$arch\)$/\1/p" | head -1; }
        pkg=$(dep)
        if [ -z "$pkg" ]; then
            apt-get update -qq >/dev/null 2>&1
            pkg=$(dep)
        fi
        [ -n "$pkg" ] || fail "no kernel headers for $(uname -r) and apt knows no linux-headers-$arch"
        common=${pkg%-"$arch"}-common
        echo "fetching $pkg and $common for bcc (kernel $(uname -r) has no headers)" >&2
        rm -rf "$HDR" && mkdir -p "$HDR/debs" "$HDR/root" || fail "cannot create $HDR"
        (cd "$HDR/debs" && apt-get download "$pkg" "$common" >/dev/null 2>&1) \
            || fail "apt-get download $pkg $common failed"
        for deb in "$HDR"/debs/*.deb; do
            dpkg-deb -x "$deb" "$HDR/root" || fail "dpkg-deb -x $deb failed"
        done
        mkdir -p "$HDR/src"
        cp -a "$HDR/root/usr/src/$common/." "$HDR/src/" &&
            cp -a "$HDR/root/usr/src/$pkg/." "$HDR/src/" || fail "cannot merge the header trees"
        rm -rf "$HDR/debs" "$HDR/root"
        echo "$pkg" > "$HDR/.complete"
    fi
    KSRC=$(cd "$HDR/src" && pwd)
    export BCC_KERNEL_SOURCE=$KSRC
    KSRC="\"$KSRC\""
fi

# a real compile and load proves the setup
err=$("$PY" -c 'from bcc import BPF
b = BPF(text="int f(struct __sk_buff *skb) { return 0; }")
b.load_func(b"f", BPF.SCHED_CLS)
b.cleanup()' 2>&1 >/dev/null) || fail "bcc cannot compile a program: $(echo "$err" | grep -v '^\s*$' | tail -1)"

printf '{"ok": true, "kernel_source": %s}\n' "$KSRC" > "$OUT"
