set -u
W=/tmp/gpu
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site0 .gpu/otel/*.whl
cd /tmp/repo
export PYTHONUNBUFFERED=1 ALEXNET_OFFLINE=1 PYTHONPATH=/tmp/site:/tmp/site0:/tmp/repo
( python3 -m bench.gpu service --store $W/store --model gpu-bn --precision fp16 --clients 4 --instances 1 --requests 2000 --work $W/serve-spy --out $W/json/spy >$W/logs/spy-load.log 2>&1 & )
for i in $(seq 60); do grep -q "ready:" $W/serve-spy/server.log 2>/dev/null && break; sleep 0.5; done; sleep 3
pid=$(pgrep -f "alexnet serve" | head -1); echo "server pid $pid"
[ -n "$pid" ] && timeout 30 /tmp/site0/bin/py-spy record --pid $pid -d 6 -r 200 --threads --format raw -o $OUT/spy-raw.txt > $W/logs/spy.log 2>&1; tail -3 $W/logs/spy.log
[ -n "$pid" ] && timeout 15 /tmp/site0/bin/py-spy dump --pid $pid > $OUT/spy-dump.txt 2>&1
for i in $(seq 40); do [ -e $W/json/spy/gpu-service.json ] && break; sleep 1; done; tail -4 $W/logs/spy-load.log
timeout 150 python3 -m bench.gpu service --store $W/store --model gpu-bn --precision fp16 --clients 1 4 16 --instances 1 --threads 0 1 4 --requests 400 --work $W/serve-bn --out $W/json/bn 2>&1 | tail -12
grep -h "ready:\|runs on" $W/serve-*/server.log
tar czf $OUT/gpu2.tgz -C $W logs json serve-bn/server.log serve-spy/server.log
