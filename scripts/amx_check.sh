#!/usr/bin/env bash
# Runs the AMX path where it exists. This project's machines (Zen 4) have no AMX; a lent
# machine with an AMX host (see docs/KERNELS.md) can run the binaries built here.
#   scripts/amx_check.sh build   # here: test binaries and the kernels bench into .devbin/
#   scripts/amx_check.sh run     # there, from the repository root, with .devbin carried;
#                                # logs go to $OUT (or .devbin/out)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.devbin
case "${1:-}" in
build)
    set -e
    mkdir -p "$bin"
    grep -qx "/$bin/" .git/info/exclude 2>/dev/null || echo "/$bin/" >>.git/info/exclude
    executables() {
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
    }
    { cargo test -p spiral-engine --no-run --message-format=json; cargo bench --bench kernels --no-run --message-format=json; } 2>/dev/null |
        executables | while read -r name path; do
            case "$name" in spiral_engine | qwen3_parity | qwen3_speech | gguf | kernels) strip -o "$bin/$name" "$path" ;; esac
        done
    pwd >"$bin/built_at"
    ls -la "$bin"
    ;;
run)
    out="${OUT:-$bin/out}"
    mkdir -p "$out"
    root=$PWD
    # The tests find their fixtures through the path they were built at.
    built=$(cat "$bin/built_at")
    [ -e "$built" ] || { mkdir -p "$(dirname "$built")" && ln -s "$root" "$built"; }
    {
        lscpu | grep -E "Model name|^CPU\(s\)|Core|L2|L3"
        echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(amx|avx512_bf16|avx512_vnni)' | tr '\n' ' ')"
    } | tee "$out/host.txt"
    cd "$built" || exit
    "$root/$bin/spiral_engine" --exact kernels::gemm::tests::amx_kernel_on_every_edge --nocapture 2>&1 | grep -E "not run|test result" | tee "$out/amx_edge.txt"
    "$root/$bin/spiral_engine" kernels:: codec:: --nocapture 2>&1 | grep -E "not run|test result|FAILED" | sort | uniq -c | tee "$out/kernels.txt"
    for t in qwen3_parity qwen3_speech gguf; do "$root/$bin/$t" 2>&1 | grep -E "test result|FAILED"; done | tee "$out/models.txt"
    for threads in ${AMX_CHECK_THREADS:-2 16}; do
        echo "== RAYON_NUM_THREADS=$threads"
        SPIRAL_BENCH_GEMM=${SPIRAL_BENCH_GEMM:-512,1024,2048} RAYON_NUM_THREADS=$threads "$root/$bin/kernels" --bench "^gemm/" \
            --warm-up-time 0.5 --measurement-time 1.5 --noplot 2>&1 | grep -E "^gemm/|thrpt:  \[[0-9]"
    done | tee "$out/gemm_bench.txt"
    ;;
*)
    echo "usage: scripts/amx_check.sh build|run" >&2
    exit 2
    ;;
esac
