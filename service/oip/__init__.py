"""The Open Inference Protocol (KServe v2 over HTTP/REST, as Triton serves it).

    errors    the protocol's error answers ({"error": ...}) and which paths are the protocol's
    tensors   tensor data <-> numpy: datatypes, JSON data, binary data, BYTES elements
    messages  the JSON objects of the protocol (requests, responses, metadata) as models
    codec     an inference request's body -> inputs; outputs -> a response body
    model     the served AlexNet as a v2 model: its metadata, its inputs -> the engine's pixels

The router (`service.routers.oip`) only wires these to the engine. Nothing here imports torch,
and only `model` knows the service's settings and decoding.
"""
