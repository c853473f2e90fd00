#!/usr/bin/env bash
# The GPU checklist on a CUDA machine, in two stages that share GPU_WORK (default /tmp/gpu):
#
#   bench/gpu_check.sh train   # synth, `alexnet train` (paper, bn; bf16, channels_last),
#                              # torchrun, the training step alone (bench.gpu train-steps),
#                              # export from the GPU checkpoints, nvJPEG decoding
#   bench/gpu_check.sh loader  # loader or GPU: folders vs JPEG vs raw shards, long epochs
#   bench/gpu_check.sh serve   # onnxruntime-gpu on CUDA: fp16 files (their agreement with
#                              # fp32 measured on CUDA), the raw engine (fp32, fp16; fp16 also
#                              # with the batch sizes 1-4 in turn) and `alexnet serve` under
#                              # load, 1 and 2 engine instances, onnxruntime's default and 4
#                              # intra-op threads; float16 overflow on CUDA (bench.gpu fp16)
#
# Each step's output goes to GPU_WORK/logs/NAME.log and its time to logs/steps.txt; a failed
# step is reported and the next one runs. Tables and JSON (bench.gpu) land in GPU_WORK/json;
# everything is packed into OUT/gpu-STAGE.tgz (OUT default: bench/results-gpu).
# `serve` expects onnxruntime-gpu and the service's dependencies importable (PYTHONPATH);
# `train` and `loader` the `train` extra's (pydantic, onnxconverter-common, webdataset).
set -u
stage=${1:?usage: bench/gpu_check.sh train|loader|serve}
W=${GPU_WORK:-/tmp/gpu}
R=${OUT:-bench/results-gpu}
PY=${PYTHON:-python3}
PER_CLASS=${GPU_PER_CLASS:-300}  # synth images per class (train + val)
EPOCHS=${GPU_EPOCHS:-4}
mkdir -p "$W/logs" "$W/json" "$R"
export PYTHONUNBUFFERED=1 ALEXNET_OFFLINE=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

step() {  # step NAME COMMAND...: run it, log it, time it, go on after a failure
    local name=$1 t0=$SECONDS rc
    shift
    echo "== $name: $*"
    "$@" >"$W/logs/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$W/logs/steps.txt"
    tail -n "${TAIL:-8}" "$W/logs/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
    >"$W/logs/smi-$stage.csv" &
smi=$!
train="$PY -m alexnet train --recipe quickstart --batch-size 128 --no-progress"

if [ "$stage" = train ]; then
    step versions "$PY" -c "import torch, torchvision; print(torch.__version__,
torchvision.__version__, torch.cuda.get_device_name(), torch.backends.cudnn.version())"
    step synth "$PY" -m alexnet synth "$W/data" --classes 10 --per-class "$PER_CLASS" --no-progress
    step train-paper $train --data "$W/data" --arch paper --init caffe --epochs "$EPOCHS" \
        --output "$W/run-paper"
    step train-bn $train --data "$W/data" --arch bn --epochs "$EPOCHS" --output "$W/run-bn"
    step torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
        -m alexnet train --data "$W/data" --recipe quickstart --batch-size 128 --no-progress \
        --arch bn --epochs 2 --output "$W/run-ddp"
    step train-steps "$PY" -m bench.gpu train-steps --archs paper bn --batches ${GPU_BATCHES:-128 256 512} \
        --steps "${GPU_STEPS:-30}" --out "$W/json"
    step export-bn "$PY" -m alexnet export "$W/run-bn/best.pt" --name gpu-bn \
        --store "$W/store" --data "$W/data"
    step decode "$PY" -m bench.gpu decode --batches 1 16 64 256 --out "$W/json"
    step export-paper "$PY" -m alexnet export "$W/run-paper/best.pt" --name gpu-paper \
        --store "$W/store" --data "$W/data"
elif [ "$stage" = loader ]; then
    # Loader or GPU? The same images as folders, JPEG shards (decoded on the GPU) and raw
    # shards, each training image listed COPIES times so that an epoch is long enough to time.
    step synth "$PY" -m alexnet synth "$W/data" --classes 10 --per-class "$PER_CLASS" --no-progress
    for split in train val; do
        for class in "$W/data/$split"/*/; do
            mkdir -p "$W/big/$split/$(basename "$class")"
            for k in $(seq "${GPU_COPIES:-6}"); do
                [ "$split" = val ] && [ "$k" -gt 1 ] && break
                for f in "$class"*; do ln -s "$f" "$W/big/$split/$(basename "$class")/$k-$(basename "$f")"; done
            done
        done
    done
    for enc in jpeg raw; do
        step "prepare-$enc" "$PY" -m alexnet prepare "$W/big" "$W/big-$enc" --encoding "$enc" \
            --no-progress
        step "prepare-small-$enc" "$PY" -m alexnet prepare "$W/data" "$W/small-$enc" \
            --encoding "$enc" --shard-size 150 --no-progress
    done
    for data in big big-jpeg big-raw; do
        step "train-paper-$data" $train --arch paper --init caffe --epochs 2 --data "$W/$data" \
            --output "$W/run-paper-$data"
    done
    step train-bn-big-raw $train --arch bn --epochs 2 --batch-size 256 --data "$W/big-raw" \
        --output "$W/run-bn-big-raw"
    # many workers, few images, a large batch: every batch of the set is still trained on
    step train-bn-small-raw-w15 $train --arch bn --epochs 3 --batch-size 256 --workers 15 \
        --data "$W/small-raw" --output "$W/run-bn-small-raw-w15"
elif [ "$stage" = serve ]; then
    step providers "$PY" -c "import onnxruntime as o; print(o.__version__, o.__file__,
o.get_available_providers())"
    for arch in bn paper; do  # with onnxruntime-gpu the fp16 agreement is measured on CUDA
        step "fp16-$arch" "$PY" -m alexnet quantize "gpu-$arch" --store "$W/store" \
            --calibration "$W/data/val" --precisions fp16 --images 80 --min-agreement 0
    done
    for arch in paper bn; do  # float16 overflow: NaNs of both conversions (bench.gpu fp16)
        step "fp16-check-$arch" "$PY" -m bench.gpu fp16 --store "$W/store" --model "gpu-$arch:1" \
            --work "$W/fp16-$arch" --out "$W/json/$arch"
    done
    for arch in bn paper; do
        step "engine-$arch" "$PY" -m bench.gpu engine --store "$W/store" --model "gpu-$arch:1" \
            --precisions fp32 fp16 --batches 1 8 32 64 --out "$W/json/$arch"
    done
    for arch in bn paper; do  # one size per call, and the sizes 1-4 in turn (a busy service)
        step "engine-mixed-$arch" "$PY" -m bench.gpu engine --store "$W/store" \
            --model "gpu-$arch:1" --precisions fp16 --batches 1 2 3 4 --mixed \
            --out "$W/json/$arch-mixed"
    done
    step service-bn "$PY" -m bench.gpu service --store "$W/store" --model gpu-bn \
        --precision fp16 --clients 1 4 16 64 --instances 1 2 --threads 0 4 --requests 512 \
        --work "$W/serve-bn" --out "$W/json/bn"
    step service-paper "$PY" -m bench.gpu service --store "$W/store" --model gpu-paper \
        --precision fp16 --clients 16 64 --instances 1 2 --requests 512 \
        --work "$W/serve-paper" --out "$W/json/paper"
    cat "$W"/serve-*/server.log >"$W/logs/server.log" 2>/dev/null
else
    echo "unknown stage $stage (train, loader or serve)" >&2
    exit 2
fi
kill "$smi" 2>/dev/null
files=(logs json)
for f in "$W"/run-*/metrics.jsonl "$W"/store/*/*/manifest.json; do
    [ -e "$f" ] && files+=("${f#"$W"/}")
done
tar czf "$R/gpu-$stage.tgz" -C "$W" "${files[@]}"
cat "$W/logs/steps.txt"
