set -u
R=$PWD
cd /tmp/p && cat q* > pay.tar && echo "$(cat $R/.gpu/pay.sha)  pay.tar" | sha256sum -c && tar xf pay.tar && mkdir -p /tmp/site && tar xJf ort.tar.xz -C /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site0 whl/*.whl || exit 3
cd $R
export PYTHONUNBUFFERED=1 ALEXNET_OFFLINE=1 PYTHONPATH=/tmp/site:/tmp/site0:$R
for sw in 0.005 0.0005 0.005 0.0005; do echo "== XSW=$sw $(date +%T)"; XSW=$sw timeout 40 python3 -m bench.gpu service --store /tmp/p/st --model bench-paper --precision fp16 --clients 1 4 --instances 1 --requests 300 --work /tmp/w-$sw --out /tmp/j-$sw 2>&1 | tail -2; done
grep -h "runs on" /tmp/w-*/server.log | head -2
