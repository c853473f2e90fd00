"""fp16 on CUDA against fp32: the LRN alone at several magnitudes, then whole models."""
import json, sys, time
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
from onnxconverter_common import float16
from training.quantize import convert_fp16
from bench import photos
from core.imaging import load_256

ort.preload_dlls()
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
out = {"lrn": [], "models": []}
W = Path(sys.argv[1]); tmp = W / "probe"; tmp.mkdir(exist_ok=True)

def lrn_nodes(m):
    return [n.name for n in m.graph.node if any(
        p.key == "pkg.torch.onnx.class_hierarchy" and "ChannelWindowLRN" in p.value
        for p in n.metadata_props)]

def to16(src, dst, keep_lrn):
    m = onnx.load(str(src))
    if not keep_lrn:
        convert_fp16(src, dst); return 0
    # "Cast" as an op type would also block the casts the converter inserts (endless loop)
    names = lrn_nodes(m) + [n.name for n in m.graph.node if n.op_type == "Cast"]
    m16 = float16.convert_float_to_float16(m, keep_io_types=True,
        op_block_list=float16.DEFAULT_OP_BLOCK_LIST, node_block_list=names)
    onnx.save(m16, str(dst)); return len(names)

def sess(p):
    s = ort.InferenceSession(str(p), providers=CUDA)
    assert s.get_providers()[0] == "CUDAExecutionProvider", s.get_providers()
    return s

# 1. the LRN alone (96 channels, 55x55) in fp16 on CUDA, ReLU'd gaussian inputs times scale
lrn = Path(".gpu/lrn.onnx")
print("lrn nodes", to16(lrn, tmp / "lrn16.onnx", False), to16(lrn, tmp / "lrn16b.onnx", True))
s32, s16, s16b = sess(lrn), sess(tmp / "lrn16.onnx"), sess(tmp / "lrn16b.onnx")
rng = np.random.default_rng(0)
for scale in (25, 50, 100, 200, 400):
    x = (np.maximum(rng.standard_normal((1, 96, 55, 55)), 0) * scale).astype(np.float32)
    ref = s32.run(None, {"x": x})[0]
    row = {"scale": scale, "x_max": float(x.max())}
    for name, s in (("fp16", s16), ("fp16_lrn_fp32", s16b)):
        y = s.run(None, {"x": x})[0]
        row[name + "_nan"] = int(np.isnan(y).sum())
        row[name + "_maxerr"] = float(np.nanmax(np.abs(y - ref))) if not np.isnan(y).all() else None
    out["lrn"].append(row); print(row, flush=True)

# 2. whole models: as trained, and with conv1 x8 (activations of ImageNet-trained size)
imgs = np.stack([load_256(j) for j in photos.photo_jpegs("500x375", count=16)])
def hot(src, dst, factor):
    m = onnx.load(str(src)); conv = next(n for n in m.graph.node if n.op_type == "Conv")
    inits = {i.name: i for i in m.graph.initializer}
    for name in conv.input[1:]:
        if name in inits:
            a = numpy_helper.to_array(inits[name]) * factor
            inits[name].CopyFrom(numpy_helper.from_array(a.astype(np.float32), name))
    onnx.save(m, str(dst))

for arch in ("paper", "bn"):
    fp32 = W / "store" / f"gpu-{arch}" / "1" / "model.onnx"
    for factor in (1, 8):
        src = fp32 if factor == 1 else tmp / f"{arch}-hot.onnx"
        if factor != 1: hot(fp32, src, factor)
        ref_p, ref_f = sess(src).run(None, {"images": imgs})
        variants = {"fp16": tmp / f"{arch}-{factor}-16.onnx", "fp16_lrn_fp32": tmp / f"{arch}-{factor}-16b.onnx"}
        to16(src, variants["fp16"], False)  # the project's converter as it is
        to16(src, variants["fp16_lrn_fp32"], True)
        for name, path in variants.items():
            s = sess(path); p, f = s.run(None, {"images": imgs})
            big = np.repeat(imgs, 4, 0)[:64]; s.run(None, {"images": big})
            t0 = time.perf_counter(); n = 0
            while time.perf_counter() - t0 < 2: s.run(None, {"images": big}); n += 64
            row = {"arch": arch, "conv1_x": factor, "file": name, "nan": int(np.isnan(p).sum()),
                   "top1_agree": float((p.argmax(1) == ref_p.argmax(1)).mean()),
                   "probs_maxerr": float(np.nanmax(np.abs(p - ref_p))) if not np.isnan(p).all() else None,
                   "fc7_rel": float(np.linalg.norm(f - ref_f) / np.linalg.norm(ref_f)),
                   "b64_img_s": n / (time.perf_counter() - t0)}
            out["models"].append(row); print(row, flush=True)
(W / "json" / "probe-fp16.json").write_text(json.dumps(out, indent=1))
