"""deploy_parity: does an exported vision model still give the same answers?

The package holds everything the suites use: model cases and their registry,
exporters, runners (one per backend), comparators, Hypothesis strategies and
settings profiles. Heavy optional backends (CUDA, TensorRT) are imported lazily so
that importing this package never needs a GPU.
"""

__version__ = "0.1.0"
