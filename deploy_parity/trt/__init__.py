"""TensorRT support that needs no TensorRT, so all of it is tested on CPU.

profiles      optimization profiles from a case, and engine shapes back into contracts
engine_cache  engines on disk, keyed by everything that makes them valid
build         the build recipe per precision and TensorRT major, and Polygraphy's loader chain
fp16_graph    the float16 ONNX graph TensorRT 11's strongly typed networks build trt-fp16 from
libs          pip-installed CUDA / TensorRT libraries made findable (Polygraphy, ONNX Runtime)

The Polygraphy/TensorRT adapter that uses them is deploy_parity.runners.trt_runner,
which imports TensorRT only when a runner is activated.
"""
