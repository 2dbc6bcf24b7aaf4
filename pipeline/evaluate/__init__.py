"""Forecast evaluation: error metrics, classical baselines and conformal intervals.

Pure NumPy functions with no Keras and no database, so a backtest can score the
LSTM and the baselines on exactly the same test points.
"""
