#!/usr/bin/env bash
# last call: join the payload, install onnxruntime-gpu + serve wheels, wait for bg, probe + bench
set -u
W=/tmp/gpu
cd /tmp/ort && cat p00 p01 p02 p03 >payload.tar && echo "7a1a29f16bd1450c570133d0cc2ae6ecfd542d9ededdb6fbe985508413f6c79f  payload.tar" | sha256sum -c || exit 3
mkdir -p x /tmp/site && tar xf payload.tar -C x && tar xJf x/ort.tar.xz -C /tmp/site \
  && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site x/*.whl || exit 4
cd /tmp/repo
export PYTHONUNBUFFERED=1 ALEXNET_OFFLINE=1 PYTHONPATH=/tmp/site:/tmp/site0:/tmp/repo
step() { local name=$1 t0=$SECONDS; shift; echo "== $name $(date +%T)"; "$@" >$W/logs/$name.log 2>&1; echo "$name rc=$? $((SECONDS - t0))s" | tee -a $W/logs/steps.txt; tail -n ${TAIL:-6} $W/logs/$name.log; }
python3 -c "import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())"
for i in $(seq 400); do [ -e $W/store.done ] && break; sleep 1; done
echo "store ready after ${i}s"; cat $W/logs/steps.txt
TAIL=40 step probe python3 .gpu/probe_fp16.py $W
for i in $(seq 300); do [ -e $W/bg.done ] && break; sleep 1; done
echo "bg done after ${i}s more"; cat $W/logs/steps.txt; grep -h "epoch\|prepared set" $W/logs/train-paper-big*.log
for arch in bn paper; do
  TAIL=8 step engine-$arch python3 -m bench.gpu engine --store $W/store --model gpu-$arch:1 --precisions fp32 fp16 --batches 1 8 32 64 --out $W/json/$arch
done
TAIL=12 step service-bn python3 -m bench.gpu service --store $W/store --model gpu-bn --precision fp16 --clients 1 4 16 64 --instances 1 2 --requests 512 --work $W/serve-bn --out $W/json/bn
TAIL=8 step service-paper python3 -m bench.gpu service --store $W/store --model gpu-paper --precision fp16 --clients 16 64 --instances 1 2 --requests 512 --work $W/serve-paper --out $W/json/paper
grep -h "ready:" $W/serve-*/server.log
tar czf $OUT/gpu.tgz -C $W logs json $(cd $W && ls -d run-*/metrics.jsonl store/*/*/manifest.json serve-*/server.log 2>/dev/null)
