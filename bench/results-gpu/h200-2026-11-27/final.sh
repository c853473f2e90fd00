#!/usr/bin/env bash
# last call: onnxruntime-gpu from the parts, then fp16 on CUDA, engine old/new graphs, the dip
set -u
W=/tmp/gpu
cd /tmp/ort && cat p0* >ort.tar.xz && sha256sum -c /tmp/repo/.gpu/ort.sha256 || exit 3
mkdir -p /tmp/site && tar xJf ort.tar.xz -C /tmp/site || exit 4
cd /tmp/repo
export PYTHONUNBUFFERED=1 ALEXNET_OFFLINE=1 PYTHONPATH=/tmp/site:/tmp/site0:/tmp/repo
step() { local name=$1 t0=$SECONDS; shift; echo "== $name $(date +%T)"; "$@" >$W/logs/$name.log 2>&1; echo "$name rc=$? $((SECONDS - t0))s" | tee -a $W/logs/steps.txt; tail -n ${TAIL:-6} $W/logs/$name.log; }
python3 -c "import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())"
for i in $(seq 300); do [ -e $W/store.done ] && break; sleep 1; done
echo "store ready after ${i}s"; cat $W/logs/steps.txt; grep -h "val" $W/logs/train-*.log | tail -4
for arch in paper bn; do
  TAIL=4 step fp16-$arch python3 -m alexnet quantize gpu-$arch --store $W/store --calibration $W/data/val --precisions fp16 --images 80 --min-agreement 0
  TAIL=14 step fp16-check-$arch python3 -m bench.gpu fp16 --store $W/store --model gpu-$arch:1 --work $W/fp16-$arch --out $W/json/$arch
done
grep -h measured_on $W/store/*/*/manifest.json
for arch in paper bn; do for k in 1 2; do
  TAIL=5 step engine-new-$arch-$k python3 -m bench.gpu engine --store $W/store --model gpu-$arch:1 --precisions fp32 --batches 1 8 64 --min-seconds 2 --out $W/json/new-$arch-$k
  (cd .gpu/old && PYTHONPATH=/tmp/site:/tmp/site0:/tmp/repo/.gpu/old TAIL=5 step engine-old-$arch-$k python3 -m bench.gpu engine --store $W/store-old --model old-$arch:1 --precisions fp32 --batches 1 8 64 --min-seconds 2 --out $W/json/old-$arch-$k)
done; done
TAIL=12 step service-bn python3 -m bench.gpu service --store $W/store --model gpu-bn --precision fp16 --clients 1 4 16 --instances 1 --threads 0 1 4 --requests 512 --work $W/serve-bn --out $W/json/bn
# where the CPU goes at 4 clients, 1 instance: py-spy on the server
( python3 -m bench.gpu service --store $W/store --model gpu-bn --precision fp16 --clients 4 --instances 1 --requests 2500 --work $W/serve-spy --out $W/json/spy >$W/logs/spy-load.log 2>&1 & )
for i in $(seq 120); do grep -q "ready:" $W/serve-spy/server.log 2>/dev/null && break; sleep 0.5; done; sleep 3
pid=$(pgrep -f "alexnet serve" | head -1); echo "server pid $pid"
timeout 40 /tmp/site0/bin/py-spy record --pid $pid -d 8 -r 200 --threads --format raw -o $OUT/spy-raw.txt > $W/logs/spy.log 2>&1; tail -3 $W/logs/spy.log
timeout 20 /tmp/site0/bin/py-spy dump --pid $pid > $OUT/spy-dump.txt 2>&1
for i in $(seq 60); do [ -e $W/json/spy/gpu-service.json ] && break; sleep 1; done; tail -4 $W/logs/spy-load.log
grep -h "ready:\|runs on" $W/serve-*/server.log
tar czf $OUT/gpu.tgz -C $W logs json $(cd $W && ls -d run-*/metrics.jsonl store/*/*/manifest.json store-old/*/*/manifest.json serve-*/server.log 2>/dev/null)
