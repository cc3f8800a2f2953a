"""The GPU smoke run behind tools/gpu_smoke.py, in parts.

What it runs, each in child processes under a timeout:
    probe, cuda_checks, harness   the stack phase's probe child: modules, torch and CUDA, the harness's imports
    stack, deps, plan             the stack phase, the wheel fallback, and what the run will do
    parity, bench                 the pytest suites per backend; one benchmark process per pair
How it reports:
    outcomes                      what the children wrote, read back and tabulated
    report                        summary.md (and the brief one printed at the end)
Around them:
    runner                        the run: deadline, child processes, phases, signals, summary.json
    processes, files              starting and killing children; writing and tailing files
    wheels, prepare_wheels        what a wheel holds and needs; --prepare-wheels
    layout                        where the checkout and the entry script are

Only the standard library is imported at module level (torch and the harness only in the
probe child): the parent must outlive whatever the image lacks or breaks. Sibling modules
are imported relatively, so the package loads both as `smoke` (the entry script's folder,
first on its path) and as `tools.smoke` (the tests).
"""
