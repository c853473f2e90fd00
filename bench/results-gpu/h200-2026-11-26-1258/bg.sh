#!/usr/bin/env bash
# background on the device: train, export, fp16, loader (packed JPEG bytes) -> /tmp/gpu
set -u
W=/tmp/gpu; mkdir -p $W/logs $W/json
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
  step fp16-$arch python3 -m alexnet quantize gpu-$arch --store $W/store --calibration $W/data/val --precisions fp16 --images 80 --min-agreement 0
done
touch $W/store.done
for split in train val; do for class in $W/data/$split/*/; do
  mkdir -p $W/big/$split/$(basename $class)
  for k in 1 2 3 4 5 6; do
    [ $split = val ] && [ $k -gt 1 ] && break
    for f in $class*; do ln -s $f $W/big/$split/$(basename $class)/$k-$(basename $f); done
  done
done; done
for enc in jpeg raw; do step prepare-$enc python3 -m alexnet prepare $W/big $W/big-$enc --encoding $enc --no-progress; done
for data in big big-jpeg big-raw; do
  step train-paper-$data $train --arch paper --init caffe --epochs 2 --data $W/$data --output $W/run-paper-$data
done
touch $W/bg.done
