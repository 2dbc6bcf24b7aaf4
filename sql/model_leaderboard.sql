-- model_leaderboard: each model version's errors, live and on validation,
-- against the naive forecast (MASE below 1 beats it, above 1 loses to it).
--
-- Grain: one row per (model_version, horizon) with at least one forecast;
-- live figures pool every forecast of that version and step whose target
-- date has a close (forecast_accuracy).
--
-- Columns:
--   model_version, mode, promoted, trained_at, data_through  from models
--   val_mase          the version's one-step MASE on its validation span
--   horizon           trading days ahead
--   forecasts         forecasts scored live
--   mae               their mean absolute error
--   naive_mae         the naive forecast's, same points
--   mase              mae / naive_mae (NULL when naive_mae is 0)
--   coverage          share of scored points inside the interval (NULL: none)
with live as (
    select
        model_version,
        horizon,
        count(*) as forecasts,
        avg(abs_error) as mae,
        avg(naive_abs_error) as naive_mae,
        avg(case when inside_interval then 1.0 when not inside_interval then 0.0 end)
            as coverage
    from forecast_accuracy
    group by model_version, horizon
),

final as (
    select
        m.version as model_version,
        m.mode,
        m.promoted,
        m.trained_at,
        m.data_through,
        m.val_mase,
        live.horizon,
        live.forecasts,
        live.mae,
        live.naive_mae,
        case when live.naive_mae > 0 then live.mae / live.naive_mae end as mase,
        live.coverage
    from models m
    join live on live.model_version = m.version
)

select * from final
