#!/usr/bin/env bash
# The scanner on a CUDA machine, in one go: the per-iteration cost (eager and CUDA graphs), the
# raw pass with channels-last weights (used on the CPU only so far), the sample models, three backdoored exporter fixtures, the test suite (scans pick CUDA by
# default), L-RED (N = 8) over a zoo's CNNs and residual nets, and, with EXACT=1 and the time
# left, the paper-exact loop on the backdoored sample model. Each stage
# runs under its own time limit and appends to OUT/log.txt, so a stage that fails or runs
# long does not lose the others; reports and tables land beside it (six files in all, seven with EXACT=1).
#
#     bash benchmarks/gpu_check.sh OUT [ZOO]
#
# ZOO is a folder built by benchmarks/zoo.py. DEADLINE (seconds, default 570) bounds the whole
# run; PYTEST_ARGS goes to pytest (for example "-n 8" where pytest-xdist is installed); EXACT=1
# adds the paper-exact stage. The backdoored sample is scanned with CUDA graphs (the default)
# and with --no-cuda-graphs, to compare.
set -u
out=${1:?usage: gpu_check.sh OUT [ZOO]}
zoo=${2:-}
deadline=${DEADLINE:-570}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$zoo" ] || zoo=$(cd "$zoo" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log="$out/log.txt"

stage() { echo "== $1 (t = ${SECONDS} s)" >>"$log"; }
left() { local s=$((deadline - SECONDS)); [ "$s" -lt "$1" ] && echo "$((s > 1 ? s : 1))" || echo "$1"; }

stage env
{
    nvidia-smi -L
    "$py" -c 'import onnxruntime as o, torch; c = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", c, torch.cuda.get_device_name(0) if c else "-"); print("onnxruntime", o.__version__, o.get_available_providers())'
} >>"$log" 2>&1

stage iteration_cost
# (model, clean data) pairs: the sample, three zoo models, and three exported fixtures (torch's
# dynamo exporter: a Reshape to a constant target; Keras through tf2onnx: a Flatten target
# computed from the input's shape, made constant by converters/shape_targets.py; TorchScript:
# F.pad's pads computed from constants, folded by converters/fold_constants.py)
fixtures=tests/fixtures/exported
pairs="sample_models/fmnist_cnn_backdoored.onnx=sample_models/clean_images"
for name in cnn-clean-s0 resnet-clean-s0 mlp-clean-s0; do
    [ -n "$zoo" ] && [ -d "$zoo/$name" ] && pairs="$pairs $zoo/$name/model.onnx=$zoo/$name/clean.npz"
done
pairs="$pairs $fixtures/torch_dynamo_backdoored.onnx=$fixtures/fmnist_clean_10_per_class.npz"
pairs="$pairs $fixtures/keras_tf2onnx_backdoored.onnx=$fixtures/fmnist_clean_10_per_class.npz"
pairs="$pairs $fixtures/torch_ts_opset17.onnx=$fixtures/fmnist_clean_10_per_class.npz"
first=1
for pair in $pairs; do
    timeout "$(left 60)" "$py" benchmarks/iteration_cost.py "${pair%%=*}" --data "${pair#*=}" \
        --device cuda --iterations 200 2>&1 | if [ $first = 1 ]; then cat; else tail -n +5; fi >>"$log"
    first=0
done

stage pass_variants
# channels-last is applied on the CPU only (scanner/estimation.py); whether it pays on this GPU
timeout "$(left 60)" "$py" benchmarks/pass_variants.py sample_models/fmnist_cnn_backdoored.onnx \
    --device cuda --no-compile --rounds 5 --iterations 20 >>"$log" 2>&1

stage sample_scans
for name in backdoored clean; do
    { time timeout "$(left 120)" "$py" -m scanner.cli scan "sample_models/fmnist_cnn_$name.onnx" \
        --data sample_models/clean_images --device cuda --json "$out/sample_$name.json"; } >>"$log" 2>&1
    echo "exit $?" >>"$log"
done
{ time timeout "$(left 120)" "$py" -m scanner.cli scan sample_models/fmnist_cnn_backdoored.onnx \
    --data sample_models/clean_images --device cuda --no-cuda-graphs --json "$out/sample_backdoored_eager.json"; } >>"$log" 2>&1
echo "exit $?" >>"$log"

stage fixture_scans
# the backdoored exporter fixtures on the GPU: verdict, target and whether CUDA graphs ran
for name in torch_dynamo_backdoored keras_tf2onnx_backdoored sklearn_mlp_nozipmap_backdoored; do
    timeout "$(left 60)" "$py" -m scanner.cli scan "$fixtures/$name.onnx" --data "$fixtures/fmnist_clean_10_per_class.npz" \
        --device cuda --quiet --json "/tmp/fixture_$name.json" >/dev/null 2>>"$log"
    "$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[2], r["verdict"], r.get("target_class"), r.get("source_classes"), "cuda_graphs:", r.get("cuda_graphs"), "estimate s:", r.get("timing", {}).get("estimate_seconds"))' \
        "/tmp/fixture_$name.json" "$name" >>"$log" 2>&1
done

stage tests
timeout "$(left 200)" "$py" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} >>"$log" 2>&1
echo "exit $?" >>"$log"

if [ -n "$zoo" ]; then
    stage zoo
    timeout "$(left 240)" "$py" benchmarks/run.py --zoo "$zoo" --out /tmp/gpu-results \
        --subset 'cnn-*' 'resnet-*' --methods lred8 >"$out/zoo.md" 2>>"$log"
    echo "exit $?" >>"$log"
    tar -czf "$out/zoo-results.tgz" -C /tmp gpu-results
fi

[ "${EXACT:-0}" = 1 ] || { stage done; exit 0; }
stage exact
{ time timeout "$(left 600)" "$py" -m scanner.cli scan sample_models/fmnist_cnn_backdoored.onnx \
    --data sample_models/clean_images --device cuda --exact --delta 1e-4 --max-iterations 100000 \
    --json "$out/sample_exact.json"; } >>"$log" 2>&1
echo "exit $?" >>"$log"
stage done
