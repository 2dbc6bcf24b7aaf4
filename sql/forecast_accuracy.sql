-- forecast_accuracy: forecasts joined to the closes that later arrived.
--
-- Grain: one row per forecast whose target date now has a close:
-- (ticker, as_of_date, target_date, model_version).
--
-- Columns:
--   ticker, as_of_date, target_date, horizon, model_version, yhat,
--   yhat_lower, yhat_upper, scale, yhat_q05, yhat_q25, yhat_q75, yhat_q95
--                     as in forecasts
--   actual            the close on target_date
--   naive             the last close on or before as_of_date (the naive forecast)
--   error             yhat - actual
--   abs_error         |yhat - actual|
--   abs_pct_error     |yhat - actual| / actual
--   naive_abs_error   |naive - actual|; sum(abs_error) / sum(naive_abs_error) is the MASE
--   inside_interval   true when yhat_lower <= actual <= yhat_upper, false when outside,
--                     NULL when the forecast has no interval (a boolean: PostgreSQL's
--                     boolean, 1/0 on SQLite and MariaDB, whose booleans are integers)
--   inside_50         true when yhat_q25 <= actual <= yhat_q75 (the fan's inner band, half
--                     of outcomes when calibrated), false when outside, NULL without
--                     quantiles
with origins as (
    select
        f.ticker,
        f.as_of_date,
        f.target_date,
        f.horizon,
        f.model_version,
        f.yhat,
        f.yhat_lower,
        f.yhat_upper,
        f.scale,
        f.yhat_q05,
        f.yhat_q25,
        f.yhat_q75,
        f.yhat_q95,
        (
            select max(p.trade_date)
            from prices p
            where p.ticker = f.ticker and p.trade_date <= f.as_of_date
        ) as origin_date
    from forecasts f
),

final as (
    select
        o.ticker,
        o.as_of_date,
        o.target_date,
        o.horizon,
        o.model_version,
        o.yhat,
        o.yhat_lower,
        o.yhat_upper,
        o.scale,
        o.yhat_q05,
        o.yhat_q25,
        o.yhat_q75,
        o.yhat_q95,
        actual.close as actual,
        origin.close as naive,
        o.yhat - actual.close as error,
        abs(o.yhat - actual.close) as abs_error,
        abs(o.yhat - actual.close) / actual.close as abs_pct_error,
        abs(origin.close - actual.close) as naive_abs_error,
        case
            when o.yhat_lower is null or o.yhat_upper is null then null
            when actual.close between o.yhat_lower and o.yhat_upper then true
            else false
        end as inside_interval,
        case
            when o.yhat_q25 is null or o.yhat_q75 is null then null
            when actual.close between o.yhat_q25 and o.yhat_q75 then true
            else false
        end as inside_50
    from origins o
    join prices actual
        on actual.ticker = o.ticker and actual.trade_date = o.target_date
    left join prices origin
        on origin.ticker = o.ticker and origin.trade_date = o.origin_date
)

select * from final
