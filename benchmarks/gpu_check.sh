#!/usr/bin/env bash
# The scanner on a CUDA machine, in one go: the per-iteration cost, the sample models, the
# test suite (scans pick CUDA by default), L-RED (N = 8) over a zoo's CNNs and residual nets,
# and, with the time left, the paper-exact loop on the backdoored sample model. Each stage
# runs under its own time limit and appends to OUT/log.txt, so a stage that fails or runs
# long does not lose the others; reports and tables land beside it (six files in all).
#
#     bash benchmarks/gpu_check.sh OUT [ZOO]
#
# ZOO is a folder built by benchmarks/zoo.py. DEADLINE (seconds, default 570) bounds the whole
# run; PYTEST_ARGS goes to pytest (for example "-n 8" where pytest-xdist is installed).
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
timeout "$(left 90)" "$py" benchmarks/iteration_cost.py sample_models/fmnist_cnn_backdoored.onnx \
    --device cuda --iterations 200 >>"$log" 2>&1
for name in cnn-clean-s0 resnet-clean-s0 mlp-clean-s0; do
    [ -n "$zoo" ] && [ -d "$zoo/$name" ] || continue
    timeout "$(left 60)" "$py" benchmarks/iteration_cost.py "$zoo/$name/model.onnx" \
        --data "$zoo/$name/clean.npz" --device cuda --iterations 200 2>&1 | tail -n 1 >>"$log"
done

stage sample_scans
for name in backdoored clean; do
    { time timeout "$(left 120)" "$py" -m scanner.cli scan "sample_models/fmnist_cnn_$name.onnx" \
        --data sample_models/clean_images --device cuda --json "$out/sample_$name.json"; } >>"$log" 2>&1
    echo "exit $?" >>"$log"
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

stage exact
{ time timeout "$(left 600)" "$py" -m scanner.cli scan sample_models/fmnist_cnn_backdoored.onnx \
    --data sample_models/clean_images --device cuda --exact --delta 1e-4 --max-iterations 100000 \
    --json "$out/sample_exact.json"; } >>"$log" 2>&1
echo "exit $?" >>"$log"
stage done
