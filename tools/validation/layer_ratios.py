"""How far a correct graph's module outputs sit from the deploy module's, in units of the
model's own float32 rounding: the measurement behind the tolerance table's ("layer", *, *)
row, and the check that the localiser blames nothing on a correct export.

For each model, on seeded examples across its size space: the harness's own export of
the deploy module, every node's tensor read on ONNX Runtime CPU, every module mapped by
scope compared with the deploy module's forward-hook records; ratio = |graph - torch32|
/ |torch32 - torch64| per module output (max over elements of each). Prints the largest
ratios per model and whether module-level localisation names anything (it must not).

    python tools/validation/layer_ratios.py pose-rtmo detr-tiny keypoint-rcnn mask-rcnn
    python tools/validation/layer_ratios.py --model-module tools/validation/unseen_cases.py unseen-tv-ssdlite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--model-module", action="append", default=[])
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "deploy_parity"))
    args = parser.parse_args(argv)

    import onnx
    import torch

    from deploy_parity.backends import RunnerContext, onnx_for
    from deploy_parity.localize import capture, layer_row, run_with_intermediates
    from deploy_parity.localize.modules import (_nearest_mapped_ancestor, first_divergent_module_in_graph,
                                                module_outputs_in_graph)
    from deploy_parity.localize.scopes import map_scopes, module_boundaries
    from deploy_parity.pool import RunnerPool
    from deploy_parity.registry import build_registry
    from deploy_parity.strategies import ParityExample

    registry = build_registry(args.model_module)
    pool = RunnerPool(RunnerContext(cache_dir=Path(args.cache_dir)))
    row = dict(layer_row())
    unit = {**row, "factor": 1.0, "rel_floor": 0.0}
    failures = 0
    for name in args.models:
        case = registry.get(name)
        ratios, blamed, seconds = [], [], []
        for example in spread(case, pool.bounds(case, _backend("onnxrt-cpu")), args.examples, ParityExample):
            target = case.deploy_target(example.height, example.width, example.dtypes)
            feed = pool.feed(case, example)
            model = onnx.load(str(onnx_for(case, target, pool.context)))
            graph = model.graph
            module = case.build_deploy(target).eval()
            inputs = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in case.input_names]
            start = time.perf_counter()
            deploy, deploy64 = capture(module, inputs), capture(module, inputs, float64=True)
            values = run_with_intermediates(model, feed)
            scopes = map_scopes([n.name for n in graph.node], deploy.names)
            outputs = {o.name for o in graph.output}
            status = module_outputs_in_graph(module_boundaries(graph, scopes), values, deploy, unit, deploy64, outputs)
            layer, note = first_divergent_module_in_graph(graph, values, deploy, feed, row, deploy64)
            seconds.append(time.perf_counter() - start)
            judged = module_outputs_in_graph(module_boundaries(graph, scopes), values, deploy, row, deploy64, outputs)
            for module_name, s in status.items():
                ancestor = _nearest_mapped_ancestor(module_name, judged)
                if judged[module_name].status in ("folded", "unsure") or (
                        judged[module_name].status == "differs" and ancestor and judged[ancestor].status == "agrees"):
                    continue  # folded by the export (a BatchNorm into its Conv), or the case's own outputs
                if s.gap is not None and s.gap.shapes is None and s.gap.limit > 0:
                    ratios.append((s.gap.error / s.gap.limit, module_name, example.describe()))
            if layer is not None:
                blamed.append((example.describe(), layer["module"], layer["difference"]))
        ratios.sort(reverse=True)
        print(f"{name}: {len(ratios)} module outputs compared; largest |graph - torch32| / |torch32 - torch64|: "
              + ", ".join(f"{r:.2f} ({m})" for r, m, _ in ratios[:4]) + f"; search {np.mean(seconds):.2f} s/example")
        for where, module_name, difference in blamed:
            failures += 1
            print(f"  BLAMED on a correct export: {module_name} at {where}: {difference}")
    return 1 if failures else 0


def _backend(name):
    from deploy_parity.backends import BACKENDS

    return BACKENDS[name]


def spread(case, bounds, n: int, example) -> list:
    """n seeded examples across the accepted sizes: the export size, then rectangles from
    the smallest side to the largest, both orientations, batch 1 and the largest batch."""
    m = bounds.multiple_of
    dtypes = bounds.default_dtypes(case)
    if bounds.fixed_height is not None:
        return [example(bounds.fixed_height, bounds.fixed_width, 1, dtypes, seed) for seed in range(n)]
    lo = -(-bounds.min_side // m) * m
    hi = min(bounds.max_side // m * m, 160 // m * m if 160 >= lo else lo)  # small sizes keep it quick
    out = [example(case.sizes.export_height or lo, case.sizes.export_width or lo, 1, dtypes, 0)]
    k = 1
    while len(out) < n:
        wide = min(hi, int(lo * min(bounds.max_aspect, 1.5)) // m * m)
        h, w = (lo, wide) if k % 2 else (wide, lo)
        if bounds.why_not(h, w, 1):
            h, w = lo, lo
        out.append(example(h, w, min(bounds.max_batch, 1 + k % 2), dtypes, k))
        k += 1
    return out


if __name__ == "__main__":
    sys.exit(main())
