"""Fixtures the harness's own tests share.

Only fixtures live here: the repository's conftest.py registers the harness's pytest
plugins (and Hypothesis's profiles) for tests/ as for suites/, and nothing here registers
them again. Helpers a test imports live in modules beside it: tests/suite_runs.py (the one
way to build and run a pytest or Python subprocess: pytest_command, suite_command,
run_command, run_pytest, run_python, run_suite, start_suite), tests/tiny_cases.py (small
cases, cases modules on disk, a user's export), tests/instance_strategies.py (Hypothesis
strategies).

Runner pools: `pool` (a fresh pool on a cache in the test's tmp_path), `make_pool` (as
many as a test wants, on another cache or with other runner settings) and `module_pool`
(one pool a module's tests share, on a cache of its own); each pool is closed when its
fixture ends, whatever the test did.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from deploy_parity.backends import RunnerContext
from deploy_parity.pool import RunnerPool


@pytest.fixture
def runner_context(tmp_path) -> RunnerContext:
    """The settings every runner factory gets, with the test's tmp_path as the cache."""
    return RunnerContext(cache_dir=tmp_path)


@pytest.fixture
def make_pool(runner_context):
    """make_pool(cache_dir=None, **settings): a RunnerPool on runner_context, with
    another cache and RunnerContext settings (case_timeout=...) where given; every pool
    made is closed at teardown."""
    pools = []

    def make(cache_dir=None, **settings) -> RunnerPool:
        if cache_dir is not None:
            settings["cache_dir"] = cache_dir
        pools.append(RunnerPool(replace(runner_context, **settings)))
        return pools[-1]

    yield make
    for made in pools:
        made.close()


@pytest.fixture
def pool(make_pool) -> RunnerPool:
    """A fresh RunnerPool on a cache in the test's tmp_path, closed at teardown."""
    return make_pool()


@pytest.fixture(scope="module")
def module_pool(tmp_path_factory):
    """One RunnerPool the module's tests share (its exports and runners built once), on a
    cache of its own, closed when the module's tests are done."""
    shared = RunnerPool(RunnerContext(cache_dir=tmp_path_factory.mktemp("cache")))
    yield shared
    shared.close()
