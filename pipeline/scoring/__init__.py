"""Scoring forecasts and calibrating their intervals: error metrics and split-conformal
intervals.

Pure NumPy functions with no Keras and no database. Both the model (its gate on
the newest span, the intervals it forecasts with) and the backtests
(``pipeline.evaluate``) score with them, so they sit below both: ``pipeline.model``
and ``pipeline.evaluate`` import this package, and it imports neither, which keeps
the backtests' dependence on the model one-way.
"""
