"""Customer analytics: pure functions and models, DataFrame in and DataFrame or Series out.

Each analysis is a submodule imported by name, for example ``from patron.analytics import clv``.
"""
