"""The adapter contract: one output format, read into the harness's Instances.

An adapter says which outputs an artifact of its format emits (names and kinds, in the
order an export flattens them), how a torch module's result maps onto those names
(eager models often nest: a list of per-image dicts, a (prediction, features) tuple),
and how one image of a batch of outputs becomes an `Instances`. It may also carry the
format's own judging defaults (its confidence cut, its top-k), which a case's
`Judging` overrides.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from deploy_parity.case import OutputSpec
from deploy_parity.compare.instances import Instances
from deploy_parity.errors import ModelCaseError


class Adapter:
    outputs: Sequence[OutputSpec] = ()
    score_threshold: Optional[float] = None
    topk: Optional[int] = None

    @property
    def output_names(self) -> list:
        return [o.name for o in self.outputs]

    def named_outputs(self, result) -> dict:
        """A torch module's result as {output name: tensor}. Default: a dict by name, a
        tensor or a flat tuple/list by position."""
        import torch

        names = self.output_names
        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, Mapping):
            missing = [n for n in names if n not in result]
            if missing:
                raise ModelCaseError(f"{type(self).__name__}: the module's result has no {missing} "
                                     f"(it has {sorted(result)})")
            extra = sorted(str(k) for k in result if k not in names)
            if extra:
                raise ModelCaseError(f"{type(self).__name__}: the module returned outputs {extra} the format does "
                                     f"not have (it has {names}); expected exactly those")
            return {n: result[n] for n in names}
        result = tuple(result)
        if len(result) != len(names):
            raise ModelCaseError(f"{type(self).__name__}: the module returned {len(result)} outputs, "
                                 f"the format has {len(names)} ({names})")
        return dict(zip(names, result))

    def to_instances(self, outputs: Mapping, index: int, image_size) -> Instances:
        raise NotImplementedError
