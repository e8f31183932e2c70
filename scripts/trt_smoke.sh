#!/usr/bin/env bash
# End-to-end TensorRT check, for a machine with TensorRT 10/11 and an NVIDIA GPU (or inside
# the Docker image: docker run --rm --gpus all -v "$PWD/out:/work/out" --entrypoint bash
# ssi-deploy /opt/ssi-deploy/scripts/trt_smoke.sh  -- or mount the checkout and run it there).
#
#   doctor -> export the default model (and its dense twin) -> build both engines
#   -> validate the SSI engine against PyTorch -> profile it against the dense engine
#
# Settings (environment): OUT (out/trt_smoke), ARCH (sparse_resnet101_dcn), SHAPE (1x3x512x512,
# the shape validated and profiled), PROFILE_SHAPES (min,opt,max of the engines' input
# profile), PRECISION (fp32 | fp16), PYTHON (python3), SSI (the ssi-deploy command).
# Exit status: 0 when every step passed; otherwise the failing step's status.
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

step "1/6 doctor (GPU, TensorRT, plugin library)"
$SSI doctor || fail "doctor: fix the FAIL lines above first"

step "2/6 export $ARCH + FPN and its dense twin ($PRECISION, dynamic batch/height/width)"
INPUT_NAME=$("$PYTHON" - "$ARCH" "$OUT" "$PRECISION" "$SHAPE" <<'PY'
import sys
from ssi_deploy.export.exporter import export_onnx
from ssi_deploy.models import create_model, dense_twin

arch, out, precision, shape = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
shape = tuple(int(d) for d in shape.split("x"))
model = create_model(arch, with_fpn=True, checkpoint=None, sampling="threshold", seed=0, init_seed=0)
dense = dense_twin(model)
for m, name in ((model, "model"), (dense, "dense")):
    m.fuse_for_inference()
    export_onnx(m, f"{out}/{name}.onnx", input_shape=shape, dtype=precision,
                progress=lambda msg: print("   ", msg, file=sys.stderr))
import onnx
print(onnx.load(f"{out}/model.onnx", load_external_data=False).graph.input[0].name)
PY
) || fail "export"
echo "input: $INPUT_NAME"

step "3/6 build the SSI engine (plugins, plugin-layer check)"
$SSI build "$OUT/model.onnx" --engine "$OUT/model.plan" --precision "$PRECISION" \
    --shapes "$INPUT_NAME:$PROFILE_SHAPES" --timing-cache "$OUT/timing.cache" || fail "build model.plan"

step "4/6 build the dense engine"
$SSI build "$OUT/dense.onnx" --engine "$OUT/dense.plan" --dense --precision "$PRECISION" \
    --shapes "$INPUT_NAME:$PROFILE_SHAPES" --timing-cache "$OUT/timing.cache" || fail "build dense.plan"

step "5/6 validate the SSI engine against the PyTorch reference ($SHAPE)"
$SSI validate "$OUT/model.plan" --backend tensorrt --random --input-shape "$SHAPE" \
    --report "$OUT/validate.json" || fail "validate (report: $OUT/validate.json)"

step "6/6 profile the SSI engine against the dense engine ($SHAPE)"
$SSI profile "$OUT/model.plan" --backend tensorrt --input-shape "$SHAPE" --compare-dense \
    --dense-engine "$OUT/dense.plan" --duration-s 5 --report "$OUT/profile.json" || fail "profile"

printf '\nall steps passed; engines, reports and timing cache in %s\n' "$OUT"
