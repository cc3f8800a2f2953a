"""Latency benchmarks: cold start apart from warm steady state, per backend and precision.

`python -m deploy_parity.bench` is the command (deploy_parity/bench.py); timing.py has
the statistics and device synchronisation, measure.py the measurements, machine.py
what they ran on. Figures are reported, never asserted (bug class 5: one cold run says
nothing, and a shared CI machine's timings say little more).
"""
