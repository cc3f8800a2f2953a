"""Adapters: turn the output formats users have into the harness's `Instances`."""
