#!/usr/bin/env bash
# GPU check of the native SSI kernels, for a lent H100/H200 (or any CUDA machine with nvcc,
# CMake and a CUDA build of PyTorch): builds libssi_cuda.so for the visible GPU, runs the
# kernel checks and the fused SSIBottleneck checks under compute-sanitizer (memcheck, small
# shapes), then scripts/gpu_check.py (checks against torch.ops.ssi and the SSIBottleneck op, a
# chain of fused blocks in a CUDA graph, timing of the fused block per ResNet-101-DCN stage
# against the dense bottleneck in cuDNN, the three-op bottleneck's timing).
# The checks run in one process (log $OUT/checks.log, json $OUT/checks/gpu_check.json), the
# timing in a second (log $OUT/gpu_check.log, $OUT/gpu_check.json, $OUT/block_latency.png);
# $OUT defaults to ./out; each process prints its tables last. $OUT holds 7 files whatever the
# options (a lent GPU machine returns at most 8): build.log (with the kernels' resource usage),
# sanitizer.log (every compute-sanitizer pass), checks.log, checks/gpu_check.json,
# gpu_check.log, gpu_check.json, block_latency.png; the sanitized runs' own JSON stays in the
# build folder.
# Budget: under 6 minutes on an H100/H200 (the fused-block timing stops at --block-budget
# seconds, default 100, and lists what it skipped: the backbone densities of every configuration
# run first, the density sweep after them). The Hopper GEMMs (SSI_BLOCK_GEMM=sm90) are
# built when CMake finds CUTLASS headers (CUTLASS_DIR, see plugins/NOTES.md); gpu_check.py then
# checks and times both GEMM paths itself (it sets SSI_BLOCK_GEMM per launch), else it says
# "unavailable"; on compute capability >= 9.0 it also checks and times "pdl", the portable
# kernels chained by programmatic dependent launch (SSI_BLOCK_PDL=1); on >= 8.0 "regs", the
# portable GEMMs without their cp.async pipeline (SSI_BLOCK_GEMM=regs: the same bits, timed at
# density 0.26 and in the breakdown: what the pipeline gains).
#   scripts/gpu_check.sh [gpu_check.py options]      CUDA_HOME: the toolkit (default /usr/local/cuda);
#   SSI_SANITIZE=0 skips the memcheck pass;
#   SSI_RACECHECK=1 adds racecheck and synccheck passes over the fused block's checks (small
#   shapes, up to 2 x 120 s: shared-memory hazards and barriers, which memcheck and the emulation
#   cannot see)
set -uo pipefail
for a in "$@"; do
  case $a in --out|--out=*)
    echo "gpu_check.sh: give the output folder as OUT=DIR in the environment, not --out (the checks go to \$OUT/checks, the timing to \$OUT)"
    exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
T_START=$(date +%s)
OUT=${OUT:-$PWD/out}
if ! mkdir -p "$OUT" 2>/dev/null || [ ! -w "$OUT" ]; then
  echo "gpu_check.sh: cannot write into $OUT: set OUT to a writable folder"
  exit 2
fi
PY=${PYTHON:-python3}
BUILD=${SSI_GPU_BUILD_DIR:-build/gpu_check}
export PATH=${CUDA_HOME:-/usr/local/cuda}/bin:$PATH PYTHONUNBUFFERED=1

arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
arch=${arch:-90}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv >"$OUT/build.log" 2>&1
echo "== build for sm_$arch" | tee -a "$OUT/build.log"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)
if ! { cmake -S plugins -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
         -DSSI_BUILD_TENSORRT=OFF &&
       cmake --build "$BUILD" -j"$(nproc)" --target ssi_cuda; } >>"$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log"
  echo "gpu_check: build failed (log: $OUT/build.log)"
  exit 2
fi
echo "built in $(( $(date +%s) - t0 )) s"
LIB=$BUILD/lib/libssi_cuda.so
cuobjdump --dump-resource-usage "$LIB" >"$BUILD/resource_usage.txt" 2>&1 || true
grep -E "REG|STACK" "$BUILD/resource_usage.txt" | sed 's/^ *//' | cut -c1-160 | head -40
{ echo "== cuobjdump --dump-resource-usage $LIB"; cat "$BUILD/resource_usage.txt"; } >>"$OUT/build.log"
: >"$OUT/sanitizer.log"

if [ "${SSI_SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck (small shapes, no caching allocator)"
  t0=$(date +%s)
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 \
    --print-limit 20 "$PY" scripts/gpu_check.py --lib "$LIB" --checks-only --small --no-graphs --ref-cpu \
    --out "$BUILD/memcheck" >"$BUILD/memcheck.log" 2>&1
  rc=$?
  { echo "== memcheck (exit status $rc)"; cat "$BUILD/memcheck.log"; } >>"$OUT/sanitizer.log"
  grep -E "ERROR SUMMARY|Invalid|out of bounds|checks:|FAIL" "$BUILD/memcheck.log" | head -20
  echo "memcheck exit status $rc after $(( $(date +%s) - t0 )) s (0 clean, 3 errors found, 124 timed out)"
fi

if [ "${SSI_RACECHECK:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  for tool in racecheck synccheck; do
    echo "== compute-sanitizer $tool (fused block checks, small shapes)"
    t0=$(date +%s)
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 3 \
      --print-limit 20 "$PY" scripts/gpu_check.py --lib "$LIB" --checks-only --block-only --small --no-graphs \
      --ref-cpu --out "$BUILD/$tool" >"$BUILD/$tool.log" 2>&1
    rc=$?
    { echo "== $tool (exit status $rc)"; cat "$BUILD/$tool.log"; } >>"$OUT/sanitizer.log"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Barrier|checks:|FAIL" "$BUILD/$tool.log" | head -20
    echo "$tool exit status $rc after $(( $(date +%s) - t0 )) s (0 clean, 3 errors found, 124 timed out)"
  done
fi

[ -s "$OUT/sanitizer.log" ] ||
  echo "no compute-sanitizer pass ran (SSI_SANITIZE=0, or compute-sanitizer is not on PATH)" >"$OUT/sanitizer.log"

# The checks and the timing in two processes: a kernel fault (a sticky CUDA error) in one
# cannot take the other's figures with it. Checks: $OUT/checks/; timing: $OUT/.
rc_checks=0 rc_timing=0 want_checks=1 want_timing=1 rest=()
for a in "$@"; do
  case $a in
    --checks-only) want_timing=0 ;;
    --timing-only) want_checks=0 ;;
    *) rest+=("$a") ;;
  esac
done
if [ "$want_checks" = 1 ]; then
  echo "== checks"
  "$PY" scripts/gpu_check.py --lib "$LIB" --out "$OUT/checks" --checks-only ${rest[@]+"${rest[@]}"} 2>&1 |
    tee "$OUT/checks.log"
  rc_checks=${PIPESTATUS[0]}
fi
if [ "$want_timing" = 1 ]; then
  echo "== timing"
  "$PY" scripts/gpu_check.py --lib "$LIB" --out "$OUT" --timing-only ${rest[@]+"${rest[@]}"} 2>&1 |
    tee "$OUT/gpu_check.log"
  rc_timing=${PIPESTATUS[0]}
fi
echo "gpu_check.sh: $(( $(date +%s) - T_START )) s in all, exit status checks $rc_checks, timing $rc_timing"
[ "$rc_checks" = 0 ] && [ "$rc_timing" = 0 ]
