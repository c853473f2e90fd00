#!/usr/bin/env bash
# call 1, in the background (setsid): train both variants, export them with today's code and
# with the code before 3a830a9 (the old ten-crop and LRN graphs) -> /tmp/gpu
set -u
W=/tmp/gpu; mkdir -p $W/logs $W/json
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site0 /tmp/repo/.gpu/small/*.whl
export PYTHONUNBUFFERED=1 ALEXNET_OFFLINE=1 PYTHONPATH=/tmp/site0:/tmp/repo
cd /tmp/repo
step() { local name=$1 t0=$SECONDS; shift; echo "== $name $(date +%T)"; "$@" >$W/logs/$name.log 2>&1; echo "$name rc=$? $((SECONDS - t0))s" | tee -a $W/logs/steps.txt; tail -n 4 $W/logs/$name.log; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 >$W/logs/smi.csv &
train="python3 -m alexnet train --recipe quickstart --batch-size 128 --no-progress"
step versions python3 -c "import torch, torchvision, onnxruntime; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(), torch.backends.cudnn.version(), onnxruntime.__version__)"
step synth python3 -m alexnet synth $W/data --classes 10 --per-class 300 --no-progress
step train-paper $train --data $W/data --arch paper --init caffe --epochs 4 --output $W/run-paper
step train-bn $train --data $W/data --arch bn --epochs 4 --output $W/run-bn
for arch in paper bn; do
  step export-$arch python3 -m alexnet export $W/run-$arch/best.pt --name gpu-$arch --store $W/store --data $W/data
  (cd .gpu/old && PYTHONPATH=/tmp/site0:/tmp/repo/.gpu/old step export-old-$arch python3 -m alexnet export $W/run-$arch/best.pt --name old-$arch --store $W/store-old --data $W/data)
done
touch $W/store.done
