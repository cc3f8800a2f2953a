"""TensorRT support that needs no TensorRT: optimization profiles and the engine cache.

Everything in this package is pure Python (plus file IO), so it is tested on CPU.
The Polygraphy/TensorRT adapter that uses it is deploy_parity.runners.trt_runner,
which imports TensorRT only when a runner is activated.
"""
