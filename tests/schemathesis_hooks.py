"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in tests/integration/test_schemathesis.py.

CPython 3.11 before 3.11.8 can raise a spurious `SystemError: AST constructor recursion depth
mismatch` from `ast.parse` in a threaded program (python/cpython#106905). Hypothesis parses source
files to describe lambdas in a strategy's repr, which it builds while validating strategies, so
the bug now and then stops a generation run. A lambda's description is cosmetic: without one,
Hypothesis uses its own "unknown" placeholder, as it does for a lambda whose source it cannot find."""

from __future__ import annotations

import inspect

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        target = getattr(f, "__wrapped_target", f)
        parameters = str(inspect.signature(target))[1:-1]
        return f"lambda {parameters}: <unknown>" if parameters else "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description
