"""Benchmarks: what the harness measures and reports, never asserts. One home for all of them.

    python -m deploy_parity.benchmarks.latency      cold start apart from warm steady state, per backend
                                                   and precision (bench.json; measure.py measures, timing.py
                                                   has the statistics and device synchronisation)
    python -m deploy_parity.benchmarks.overhead     the harness's own cost per phase of a parity run, and
                                                   its judging against Polygraphy's Comparator (overhead.json)
    python -m deploy_parity.benchmarks.comparators  the structured comparators on realistic sizes

process.py measures every run's overhead (run.json); machine.py describes what a figure
ran on. Bug class 5: one cold run says nothing, and a shared CI machine's timings say
little more, so figures go to reports, never into a test's assertion.
"""
