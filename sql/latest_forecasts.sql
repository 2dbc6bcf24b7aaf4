-- latest_forecasts: the newest forecast of each ticker for each target date.
--
-- Grain: one row per (ticker, target_date).
-- Of all forecasts for a target date, the one with the newest as_of_date wins;
-- among those, the champion's (promoted) and then the newest model version.
--
-- Columns:
--   ticker         the symbol
--   target_date    the trading day forecast
--   as_of_date     the last date of prices the forecast used
--   horizon        trading days between as_of_date and target_date
--   yhat           forecast close
--   yhat_lower     lower bound of the prediction interval (NULL: none)
--   yhat_upper     upper bound of the prediction interval (NULL: none)
--   scale          predicted standard deviation of log(close on target_date / last
--                  close): the risk estimate, larger in turbulent weeks (NULL: a model
--                  with static intervals)
--   yhat_q05, yhat_q25, yhat_q75, yhat_q95
--                  quantiles of the forecast close (yhat is the median): the bands of
--                  a fan chart, 90 % and 50 % of outcomes between them (NULL: none)
--   model_version  the model that made it (see models)
with ranked as (
    select
        f.ticker,
        f.target_date,
        f.as_of_date,
        f.horizon,
        f.yhat,
        f.yhat_lower,
        f.yhat_upper,
        f.scale,
        f.yhat_q05,
        f.yhat_q25,
        f.yhat_q75,
        f.yhat_q95,
        f.model_version,
        row_number() over (
            partition by f.ticker, f.target_date
            order by f.as_of_date desc, m.promoted desc, f.model_version desc
        ) as rank_in_target
    from forecasts f
    join models m on m.version = f.model_version
),

final as (
    select
        ticker,
        target_date,
        as_of_date,
        horizon,
        yhat,
        yhat_lower,
        yhat_upper,
        scale,
        yhat_q05,
        yhat_q25,
        yhat_q75,
        yhat_q95,
        model_version
    from ranked
    where rank_in_target = 1
)

select * from final
