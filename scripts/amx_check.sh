#!/usr/bin/env bash
# Runs the AVX-512 levels and the AMX path where they exist. This project's CI machines
# may have neither; a lent machine with an AMX host (see docs/KERNELS.md) runs the
# binaries built here. A call carries at most 64 MiB with the working tree, so the test
# binaries, the voice and the speed comparison travel in three folders, each run by a step:
#   scripts/amx_check.sh build       # here: test binaries and the kernels bench into .devbin/
#   scripts/amx_check.sh voice       # here: the default voice, espeak-ng and vits_parity into .devvoice/
#   scripts/amx_check.sh bench       # here: the release spiral and piper-tts's wheels into .devbench/
#   scripts/amx_check.sh run         # there, with .devbin carried: kernels, models, GEMM speed
#   scripts/amx_check.sh run-voice   # there, with .devvoice carried: the voice on every level
#   scripts/amx_check.sh run-bench   # there, with .devbench carried, on the machine run-voice
#                                    # left the voice on (the next call, within its warm time):
#                                    # the voice against piper-tts on two cores, and per level
# Logs go to $OUT (or to the carried folder's out/).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.devbin
voice=.devvoice
bench=.devbench
# Where run-voice leaves the voice, espeak-ng and the parity binary for run-bench.
there="${TMPDIR:-/tmp}/spiral-amx-check"
exclude() { grep -qx "/$1/" .git/info/exclude 2>/dev/null || echo "/$1/" >>.git/info/exclude; }
# The engine's test and bench executables, as "name path" lines.
executables() {
    { cargo test -p spiral-engine --no-run --message-format=json; cargo bench --bench kernels --no-run --message-format=json; } 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
host() {
    lscpu | grep -E "Model name|^CPU\(s\)|Core|L2|L3"
    echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(amx|avx512_bf16|avx512_vnni|avx512f$)' | tr '\n' ' ')"
}
# The tests find their fixtures through the path they were built at.
enter_built_at() {
    local built
    built=$(cat "$1/built_at")
    [ -e "$built" ] || { mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"; }
    cd "$built" || exit
}
case "${1:-}" in
build)
    set -e
    mkdir -p "$bin"
    exclude "$bin"
    executables | while read -r name path; do
        case "$name" in spiral_engine | qwen3_parity | qwen3_speech | gguf | kernels) strip -o "$bin/$name" "$path" ;; esac
    done
    pwd >"$bin/built_at"
    ls -la "$bin"
    ;;
voice)
    set -e
    mkdir -p "$voice"
    exclude "$voice"
    cache="${SPIRAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spiral}/voices/en_US-joe-medium"
    [ -f "$cache/en_US-joe-medium.onnx" ] || { echo "no cached voice in $cache: run 'spiral voices' or a test first" >&2; exit 1; }
    executables | while read -r name path; do
        if [ "$name" = vits_parity ]; then strip -o "$voice/vits_parity" "$path"; fi
    done
    xz -9 -T0 -f "$voice/vits_parity"
    # The file's bytes as four planes (every fourth byte together) before xz: the floats'
    # sign-and-exponent bytes then compress, 58 MB becomes 53 and the call fits.
    python3 -c '
import lzma, sys
data = open(sys.argv[1], "rb").read()
size = len(data)
data += bytes(-size % 4)
with lzma.open(sys.argv[2], "wb", preset=6) as out:
    out.write(size.to_bytes(8, "little"))
    for plane in range(4):
        out.write(data[plane::4])' "$cache/en_US-joe-medium.onnx" "$voice/en_US-joe-medium.onnx.planes.xz"
    cp "$cache/en_US-joe-medium.onnx.json" "$voice/"
    # espeak-ng, which loading a voice starts: the library, the libraries it needs beyond a
    # base system's, and the English data.
    lib=$(ldconfig -p | awk '/libespeak-ng.so.1 .*x86-64/{print $NF; exit}')
    data=$(dirname "$lib")/espeak-ng-data
    stage=$(mktemp -d)
    mkdir -p "$stage/lib" "$stage/espeak-ng-data"
    cp -L "$lib" "$stage/lib/"
    ldd "$lib" | awk '/=>/{print $1, $3}' | grep -vE '^lib(c|m|gcrypt|gpg-error|systemd|zstd|lzma|lz4|cap|bsd|md)\.so' |
        while read -r name path; do cp -L "$path" "$stage/lib/$name"; done
    cp -r "$data"/phon* "$data"/intonations "$data"/en_dict "$data"/lang "$data"/voices "$stage/espeak-ng-data/"
    tar -C "$stage" -cJf "$voice/espeak.tar.xz" lib espeak-ng-data
    rm -rf "$stage"
    pwd >"$voice/built_at"
    ls -la "$voice"
    ;;
run)
    out="${OUT:-$bin/out}"
    mkdir -p "$out"
    root=$PWD
    host | tee "$out/host.txt"
    enter_built_at "$bin"
    "$root/$bin/spiral_engine" --exact kernels::gemm::tests::amx_kernel_on_every_edge --nocapture 2>&1 | grep -E "not run|test result" | tee "$out/amx_edge.txt"
    # Everything but what needs the phonemizer or the voice's files (espeak-ng and the voice
    # are not there; run-voice carries them for vits_parity).
    "$root/$bin/spiral_engine" --skip text:: --skip voices:: --skip onnx::tests::joe \
        --skip models::vits::speech::tests::a_long_text_is_read_a_sentence_at_a_time 2>&1 | tee "$out/engine.log" |
        grep -E "not run|test result|FAILED|panicked" | sort | uniq -c
    for t in qwen3_parity qwen3_speech gguf; do "$root/$bin/$t" 2>&1 | grep -E "test result|FAILED"; done | tee "$out/models.txt"
    for threads in ${AMX_CHECK_THREADS:-2 16}; do
        echo "== RAYON_NUM_THREADS=$threads"
        SPIRAL_BENCH_GEMM=${SPIRAL_BENCH_GEMM:-512,1024,2048} RAYON_NUM_THREADS=$threads "$root/$bin/kernels" --bench "^gemm/" \
            --warm-up-time 0.5 --measurement-time 1.5 --noplot 2>&1 | grep -E "^gemm/|thrpt:  \[[0-9]"
    done | tee "$out/gemm_bench.txt"
    ;;
run-voice)
    out="${OUT:-$voice/out}"
    mkdir -p "$out"
    root=$PWD
    host | tee "$out/host.txt"
    export SPIRAL_CACHE_DIR="$there"
    dir="$SPIRAL_CACHE_DIR/voices/en_US-joe-medium"
    mkdir -p "$dir"
    unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; }
    python3 -c '
import lzma, sys
packed = lzma.open(sys.argv[1]).read()
size, planes = int.from_bytes(packed[:8], "little"), packed[8:]
data, step = bytearray(len(planes)), len(planes) // 4
for plane in range(4):
    data[plane::4] = planes[plane * step:(plane + 1) * step]
open(sys.argv[2], "wb").write(data[:size])' "$voice/en_US-joe-medium.onnx.planes.xz" "$dir/en_US-joe-medium.onnx"
    cp "$voice/en_US-joe-medium.onnx.json" "$dir/"
    unxz "$voice/vits_parity.xz" "$SPIRAL_CACHE_DIR/vits_parity" && chmod +x "$SPIRAL_CACHE_DIR/vits_parity"
    tar -C "$SPIRAL_CACHE_DIR" -xJf "$voice/espeak.tar.xz"
    export LD_LIBRARY_PATH="$SPIRAL_CACHE_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ESPEAK_DATA_PATH="$SPIRAL_CACHE_DIR"
    enter_built_at "$voice"
    "$SPIRAL_CACHE_DIR/vits_parity" --nocapture 2>&1 | tee "$out/vits_parity.log" | grep -E "^test |test result|panicked|FAILED"
    ;;
bench)
    set -e
    mkdir -p "$bench"
    exclude "$bench"
    cargo build --release
    strip -o "$bench/spiral" target/release/spiral
    piper=$(grep -E '^piper-tts==' scripts/fixtures/requirements.txt)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$bench" "$piper" pathvalidate
    ls -la "$bench"
    ;;
run-bench)
    out="${OUT:-$bench/out}"
    mkdir -p "$out"
    model="$there/voices/en_US-joe-medium/en_US-joe-medium.onnx"
    [ -f "$model" ] || { echo "no voice in $there: run-voice must run first on this same machine" >&2; exit 1; }
    host | tee "$out/host.txt"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$there/site" "$bench"/*.whl || exit
    export PYTHONPATH="$there/site" SPIRAL_CACHE_DIR="$there" ESPEAK_DATA_PATH="$there"
    export LD_LIBRARY_PATH="$there/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    spiral="$PWD/$bench/spiral"
    # Two cores for both, as on this project's machines.
    (cd scripts && taskset -c 0,1 python3 bench_vits.py --spiral "$spiral" --repeats 5 --threads 2 --model "$model" \
        >"$out/bench_vits_2cores.json")
    for isa in avx2 avx512 avx512bf16 amx; do
        for precision in f32 mixed; do
            SPIRAL_ISA=$isa taskset -c 0,1 "$spiral" bench vits --repeats 5 --precision $precision \
                "The sun rose over the quiet hills, and the birds began to sing." \
                "Could you please tell me where the nearest train station is?" 2>&1
        done
    done | tee "$out/levels.txt"
    ;;
*)
    echo "usage: scripts/amx_check.sh build|voice|bench|run|run-voice|run-bench" >&2
    exit 2
    ;;
esac
