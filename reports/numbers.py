"""Numbers as the reports print them: three significant digits, '-' for none, 'inf'.

Standard library only, and nothing else imported from `reports`: tools/gpu_smoke.py's
parent process imports this module on the GPU image, which may lack what the rest of the
harness imports (finding that out is the smoke run's job, so the parent must not depend on it).
"""

from __future__ import annotations

import math


def number_text(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}g}"
    return str(value)
