"""The torch-free core both `training` and `service` stand on; it imports nothing else of ours.

- `constants`: every size, file name, suffix and format table, once.
- `imaging`: the one preprocessing (decode, shorter side to 256, central 256x256).
- `store`: the versioned model store and its manifests.
- `model_loader`: a store entry -> a checked onnxruntime session.
- `durable`: the one durable write (temporary file, fsync, rename, fsync of the folder).
"""
