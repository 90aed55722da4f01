with

predictions as (

    select * from {{ pyml.relation_or_empty(source('ml', 'revenue_90d_predictions'), {
        'customer_id': 'bigint',
        'as_of_date': 'date',
        'prediction': 'double',
        'model_version': 'integer',
        'scored_at': 'timestamp',
    }) }}

),

features as (

    select * from {{ ref('customer_features') }}

),

latest_predictions as (

    -- One prediction per customer and as-of date, from the newest scoring run.
    select * from predictions
    qualify row_number() over (
        partition by customer_id, as_of_date
        order by scored_at desc, model_version desc
    ) = 1

),

joined as (

    select
        latest_predictions.as_of_date,
        latest_predictions.model_version,
        latest_predictions.prediction,
        features.revenue_next_90d

    from latest_predictions
    inner join features
        on
            latest_predictions.customer_id = features.customer_id
            and latest_predictions.as_of_date = features.as_of_date

),

final as (

    select
        as_of_date,
        count(*) as customers_count,
        max(model_version) as model_version,
        cast(round(sum(prediction), 2) as double) as predicted_revenue_amount,
        -- null for as-of dates whose next 90 days are not in the data yet
        cast(round(sum(revenue_next_90d), 2) as double) as actual_revenue_amount,
        cast(round(
            sum(prediction) / nullif(sum(revenue_next_90d), 0) - 1, 4
        ) as double) as forecast_error_ratio

    from joined
    group by as_of_date

)

select * from final
