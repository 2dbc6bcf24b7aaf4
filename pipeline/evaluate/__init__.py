"""Forecast evaluation: backtests of the LSTM variants against classical baselines.

A backtest refits each variant (with ``pipeline.model``) and fits the baselines on
each fold, and scores all of them on exactly the same test points with the
metrics of ``pipeline.scoring``. The dependence is one-way: the model never
imports this package.
"""
