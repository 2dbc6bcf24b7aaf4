"""Interval baselines: hand-computed EWMA and quantiles, GARCH against arch, no look-ahead."""

from __future__ import annotations

import logging
import math
from statistics import NormalDist

import numpy as np
import pytest
from arch import arch_model

from pipeline.evaluate.volatility import (
    INTERVAL_BASELINES,
    QUANTILE_LEVELS,
    RISKMETRICS_LAMBDA,
    DistributionForecast,
    GarchFitError,
    ewma_scale_at,
    ewma_variance,
    fit_garch,
    naive_ewma,
    naive_garch,
    naive_quantile,
)

TRUE_OMEGA, TRUE_ALPHA, TRUE_BETA, TRUE_NU = 2e-6, 0.08, 0.90, 6.0


def _garch_t_prices(n_returns: int, seed: int) -> np.ndarray:
    """Prices whose daily log returns follow a zero-mean GARCH(1,1) with Student-t shocks."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(TRUE_NU, size=n_returns) * math.sqrt((TRUE_NU - 2) / TRUE_NU)
    variance = TRUE_OMEGA / (1 - TRUE_ALPHA - TRUE_BETA)
    returns = np.empty(n_returns)
    for t in range(n_returns):
        returns[t] = math.sqrt(variance) * shocks[t]
        variance = TRUE_OMEGA + TRUE_ALPHA * returns[t] ** 2 + TRUE_BETA * variance
    return 50.0 * np.exp(np.concatenate(([0.0], np.cumsum(returns))))


def test_ewma_variance_follows_the_recursion_by_hand() -> None:
    variances = ewma_variance(np.array([0.01, -0.02, 0.03]), lam=0.9, initial=1e-4)
    # v1 = .9e-4 + .1 * 1e-4; v2 = .9 * 1e-4 + .1 * 4e-4; v3 = .9 * 1.3e-4 + .1 * 9e-4.
    np.testing.assert_allclose(variances, [1e-4, 1e-4, 1.3e-4, 2.07e-4], rtol=1e-12)


def test_ewma_variance_without_initial_has_no_first_forecast() -> None:
    variances = ewma_variance(np.array([0.02, 0.01, -0.03]), lam=0.5)
    assert math.isnan(variances[0])
    np.testing.assert_allclose(variances[1:], [4e-4, 2.5e-4, 5.75e-4], rtol=1e-12)


@pytest.mark.parametrize(
    ("returns", "lam", "initial", "message"),
    [
        ([0.01], 1.0, None, "lam"),
        ([0.01], 0.0, None, "lam"),
        ([0.01], 0.94, -1.0, "initial variance"),
        ([], 0.94, None, "at least one return"),
        ([0.01, np.nan], 0.94, None, "NaN"),
    ],
)
def test_ewma_variance_refuses_bad_arguments(
    returns: list[float], lam: float, initial: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ewma_variance(np.array(returns), lam=lam, initial=initial)


def test_naive_ewma_on_a_tiny_series_by_hand() -> None:
    prices = np.array([100.0, 101.0, 99.0, 102.0, 103.0])
    levels = (0.05, 0.5, 0.95)
    forecast = naive_ewma(prices, np.array([2, 4]), 2, fit_start=0, fit_end=2, levels=levels)

    r = [math.log(prices[t] / prices[t - 1]) for t in range(1, 5)]
    lam = RISKMETRICS_LAMBDA
    variance = (r[0] ** 2 + r[1] ** 2) / 2  # training span [0, 2]: r1, r2
    by_origin = {0: variance}
    for origin in range(1, 5):
        variance = lam * variance + (1 - lam) * r[origin - 1] ** 2
        by_origin[origin] = variance
    for row, origin in enumerate([2, 4]):
        for step in (1, 2):
            scale = math.sqrt(by_origin[origin] * step)
            assert forecast.scale[row, step - 1] == pytest.approx(scale, rel=1e-12)
            assert forecast.yhat[row, step - 1] == prices[origin]
            for k, level in enumerate(levels):
                expected = prices[origin] * math.exp(scale * NormalDist().inv_cdf(level))
                assert forecast.quantiles[row, step - 1, k] == pytest.approx(expected, rel=1e-12)
    assert forecast.levels == levels
    np.testing.assert_allclose(
        ewma_scale_at(prices, np.array([2, 4]), 0, 2), forecast.scale[:, 0], rtol=1e-15
    )


def test_naive_quantile_matches_np_quantile_of_hand_made_returns() -> None:
    prices = np.array([20.0, 21.0, 20.5, 22.0, 21.0, 23.0, 22.5, 24.0, 25.0, 26.0])
    fit_start, fit_end, origins = 1, 7, np.array([7, 9])
    forecast = naive_quantile(prices, origins, 3, fit_start, fit_end)
    for step in (1, 2, 3):
        returns = [
            math.log(prices[t + step] / prices[t]) for t in range(fit_start, fit_end - step + 1)
        ]
        assert len(returns) == fit_end - fit_start - step + 1
        for row, origin in enumerate(origins):
            np.testing.assert_allclose(
                forecast.quantiles[row, step - 1],
                prices[origin] * np.exp(np.quantile(returns, QUANTILE_LEVELS)),
                rtol=1e-12,
            )
            assert forecast.yhat[row, step - 1] == prices[origin]  # the naive forecast
            assert forecast.scale[row, step - 1] == pytest.approx(np.std(returns, ddof=1))


@pytest.mark.parametrize("name", sorted(INTERVAL_BASELINES))
def test_no_look_ahead(name: str, caplog: pytest.LogCaptureFixture) -> None:
    baseline = INTERVAL_BASELINES[name]
    prices = _garch_t_prices(400, seed=11)
    origins = np.arange(300, 390, 7)
    cut = 340
    perturbed = prices.copy()
    perturbed[cut + 1 :] *= np.exp(np.random.default_rng(5).normal(0, 0.05, size=400 - cut))
    before = baseline(prices, origins, 5, 10, 300)
    after = baseline(perturbed, origins, 5, 10, 300)
    kept = origins <= cut
    assert kept.any() and not kept.all()
    for field in ("yhat", "scale", "quantiles"):
        old, new = getattr(before, field), getattr(after, field)
        np.testing.assert_array_equal(old[kept], new[kept])
    # Later origins do see the perturbation (the static naive_quantile only via the close).
    assert not np.allclose(before.quantiles[~kept], after.quantiles[~kept])
    assert not caplog.records  # naive_garch fitted, it did not fall back to the EWMA


def test_naive_garch_recovers_the_truth_matches_arch_and_covers() -> None:
    prices = _garch_t_prices(2000, seed=7)
    fit_end = 1500
    fit = fit_garch(prices, 0, fit_end)
    assert fit.alpha == pytest.approx(TRUE_ALPHA, abs=0.05)
    assert fit.beta == pytest.approx(TRUE_BETA, abs=0.07)
    assert 3.5 < fit.nu < 12
    true_long_run = TRUE_OMEGA / (1 - TRUE_ALPHA - TRUE_BETA)
    assert fit.omega / (1 - fit.alpha - fit.beta) == pytest.approx(true_long_run, rel=0.4)

    # arch's own forecast from the same fit, at the last training point.
    returns = 100 * np.diff(np.log(prices[: fit_end + 1]))
    result = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    assert fit.alpha == pytest.approx(result.params["alpha[1]"], rel=1e-9)
    arch_variance = result.forecast(horizon=3, reindex=False).variance.to_numpy()[-1] / 1e4
    at_end = naive_garch(prices, np.array([fit_end]), 3, 0, fit_end)
    np.testing.assert_allclose(at_end.scale[0] ** 2, np.cumsum(arch_variance), rtol=1e-9)

    origins = np.arange(fit_end, fit_end + 500)
    forecast = naive_garch(prices, origins, 5, 0, fit_end)
    assert (np.diff(forecast.quantiles, axis=-1) > 0).all()
    lower, upper = forecast.quantiles[:, 0, 0], forecast.quantiles[:, 0, -1]
    actual = prices[origins + 1]
    coverage = float(np.mean((actual >= lower) & (actual <= upper)))
    assert 0.85 <= coverage <= 0.95


@pytest.mark.parametrize(
    ("prices", "reason"),
    [
        (100.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, size=21))), "fewer"),
        (np.full(80, 40.0), "zero"),
        (40.0 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 1e-9, size=80))), "EWMA"),
    ],
    ids=["too-short", "constant", "constant-ish"],
)
def test_naive_garch_falls_back_to_ewma_with_a_warning(
    prices: np.ndarray, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    origins = np.array([prices.size - 3, prices.size - 1])
    fit_end = prices.size - 3
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.volatility"):
        forecast = naive_garch(prices, origins, 4, 0, fit_end)
    expected = naive_ewma(prices, origins, 4, 0, fit_end)
    for field in ("yhat", "scale", "quantiles"):
        np.testing.assert_array_equal(getattr(forecast, field), getattr(expected, field))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "EWMA" in messages[0] and reason in messages[0]


@pytest.mark.parametrize("name", sorted(INTERVAL_BASELINES))
def test_shapes(name: str) -> None:
    prices = _garch_t_prices(120, seed=3)
    forecast = INTERVAL_BASELINES[name](prices, np.array([80, 90, 119]), 6, 5, 80)
    assert forecast.yhat.shape == forecast.scale.shape == (3, 6)
    assert forecast.quantiles.shape == (3, 6, len(QUANTILE_LEVELS))
    assert forecast.levels == QUANTILE_LEVELS
    assert (np.diff(forecast.quantiles, axis=-1) >= 0).all()
    assert (forecast.scale > 0).all()


@pytest.mark.parametrize("name", sorted(INTERVAL_BASELINES))
@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ((0.0, 0.5), "between 0 and 1"),
        ((0.5, 1.0), "between 0 and 1"),
        ((0.5, 0.25), "strictly increasing"),
        ((0.25, 0.25), "strictly increasing"),
        ((), "non-empty"),
    ],
)
def test_refuses_bad_levels(name: str, levels: tuple[float, ...], message: str) -> None:
    prices = _garch_t_prices(60, seed=3)
    with pytest.raises(ValueError, match=message):
        INTERVAL_BASELINES[name](prices, np.array([50]), 2, 0, 50, levels=levels)


@pytest.mark.parametrize("name", sorted(INTERVAL_BASELINES))
def test_refuses_bad_spans_and_prices(name: str) -> None:
    baseline = INTERVAL_BASELINES[name]
    prices = _garch_t_prices(60, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        baseline(prices, np.array([50]), 1, 49, 50)
    with pytest.raises(ValueError, match="needs fit_end"):
        baseline(prices, np.array([50]), 1, 0, None)
    with pytest.raises(ValueError, match="fit_end must lie"):
        baseline(prices, np.array([40, 50]), 1, 0, 45)
    negative = prices.copy()
    negative[55] = -1.0
    with pytest.raises(ValueError, match="positive prices"):
        baseline(negative, np.array([50, 57]), 1, 0, 50)


def test_naive_quantile_refuses_a_horizon_longer_than_the_span() -> None:
    with pytest.raises(ValueError, match="at least 2 returns of 5 step"):
        naive_quantile(np.linspace(10, 20, 30), np.array([25]), 5, 20, 25)


def test_fit_garch_refuses_a_short_span() -> None:
    with pytest.raises(GarchFitError, match="fewer than the 30"):
        fit_garch(np.linspace(10, 20, 30), 0, 29)


def test_distribution_forecast_checks_shapes() -> None:
    with pytest.raises(ValueError, match="quantiles must have shape"):
        DistributionForecast(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3, 4)), (0.1, 0.9))
    with pytest.raises(ValueError, match="scale must have"):
        DistributionForecast(np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 3, 2)), (0.1, 0.9))


def test_an_integrated_garch_is_kept_and_its_variance_grows_by_omega_a_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.evaluate.volatility as volatility

    fit = volatility.GarchFit(omega=1e-6, alpha=0.1, beta=0.9, nu=6.0, last_variance=4e-4)
    monkeypatch.setattr(volatility, "fit_garch", lambda *args: fit)
    prices = 100.0 * np.exp(np.cumsum(np.full(60, 0.01)))
    forecast = volatility.naive_garch(prices, np.array([40]), 3, 0, 40)
    # One step: omega + alpha * r_40**2 + beta * s_40, where s_40 (the variance of the
    # span's last return r_40) is the fit's last conditional variance.
    r40 = 0.01
    s41 = fit.omega + fit.alpha * r40**2 + fit.beta * fit.last_variance
    per_day = np.array([s41, s41 + fit.omega, s41 + 2 * fit.omega])  # persistence 1
    np.testing.assert_allclose(forecast.scale[0], np.sqrt(np.cumsum(per_day)))
