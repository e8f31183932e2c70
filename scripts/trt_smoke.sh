#!/usr/bin/env bash
# End-to-end TensorRT check, for a machine with TensorRT 10/11 and an NVIDIA GPU, or inside the
# Docker image with the checkout mounted:
#   docker run --rm --gpus all -v "$PWD:/src" -w /src --entrypoint bash ssi-deploy scripts/trt_smoke.sh
#
#   doctor -> export the default model -> build its engine (plugin-layer check)
#   -> validate the engine against PyTorch -> profile it against the dense twin's engine
#
# Settings (environment): OUT (out/trt_smoke), ARCH (sparse_resnet101_dcn), SHAPE (1x3x512x512,
# the shape validated and profiled), PROFILE_SHAPES (min,opt,max of the engines' input
# profile), PRECISION (fp32 | fp16), PYTHON (python3), SSI (the ssi-deploy command).
# Exit status: 0 when every step passed; otherwise 1 after a line saying which step failed.
set -euo pipefail

OUT=${OUT:-out/trt_smoke}
ARCH=${ARCH:-sparse_resnet101_dcn}
SHAPE=${SHAPE:-1x3x512x512}
PROFILE_SHAPES=${PROFILE_SHAPES:-1x3x256x256,${SHAPE},1x3x1024x1024}
PRECISION=${PRECISION:-fp32}
PYTHON=${PYTHON:-python3}
if [[ -z "${SSI:-}" ]]; then
  if command -v ssi-deploy > /dev/null; then SSI=ssi-deploy; else SSI="$PYTHON -m ssi_deploy.cli.main"; fi
fi
mkdir -p "$OUT"

step() { printf '\n== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

step "1/5 doctor (GPU, TensorRT, plugin library)"
$SSI doctor || fail "doctor: fix the FAIL lines above first"

step "2/5 export $ARCH + FPN ($PRECISION, dynamic batch/height/width)"
$SSI export --arch "$ARCH" --with-fpn -o "$OUT/model.onnx" --input-shape "$SHAPE" \
    --dtype "$PRECISION" || fail "export"  # block form: one fused SSIBottleneck plugin per block
INPUT_NAME=$("$PYTHON" -c 'import sys, onnx; print(onnx.load(sys.argv[1], load_external_data=False).graph.input[0].name)' "$OUT/model.onnx")
echo "input: $INPUT_NAME"

step "3/5 build the SSI engine (plugins, plugin-layer check)"
$SSI build "$OUT/model.onnx" --engine "$OUT/model.plan" --precision "$PRECISION" \
    --shapes "$INPUT_NAME:$PROFILE_SHAPES" --timing-cache "$OUT/timing.cache" || fail "build model.plan"

step "4/5 validate the SSI engine against the PyTorch reference ($SHAPE)"
$SSI validate "$OUT/model.plan" --backend tensorrt --random --input-shape "$SHAPE" \
    --report "$OUT/validate.json" || fail "validate (report: $OUT/validate.json)"

step "5/5 profile the SSI engine (model.plan, reused) against its dense twin's engine ($SHAPE)"
$SSI profile "$OUT/model.onnx" --backend tensorrt --input-shape "$SHAPE" --compare-dense \
    --per-layer --duration-s 5 --report "$OUT/profile.json" || fail "profile"

printf '\nall steps passed; engines, reports and timing cache in %s\n' "$OUT"
