{%- set thresholds = var('pyml_risk_band_thresholds') -%}
{%- set window_days = var('pyml_label_window_days') -%}

with

predictions as (

    select * from {{ pyml.relation_or_empty(source('ml', 'churn_predictions'), {
        'customer_id': 'bigint',
        'as_of_date': 'date',
        'prediction': 'boolean',
        'probability': 'double',
        'model_version': 'integer',
        'scored_at': 'timestamp',
    }) }}

),

features as (

    select * from {{ ref('customer_features') }}

),

customers as (

    select * from {{ ref('int_customers_enriched') }}

),

latest_predictions as (

    -- Each customer at their latest scored as-of date, from the newest scoring run.
    select * from predictions
    qualify row_number() over (
        partition by customer_id
        order by as_of_date desc, scored_at desc, model_version desc
    ) = 1

),

active_at_as_of as (

    -- customer_features holds only customers active at each as-of date.
    select
        latest_predictions.customer_id,
        latest_predictions.as_of_date,
        latest_predictions.probability,
        latest_predictions.prediction,
        latest_predictions.model_version,
        latest_predictions.scored_at,
        features.plan_code,
        features.plan_tier,
        features.monthly_price_amount

    from latest_predictions
    inner join features
        on
            latest_predictions.customer_id = features.customer_id
            and latest_predictions.as_of_date = features.as_of_date

),

final as (

    select
        active_at_as_of.customer_id,
        active_at_as_of.as_of_date,
        customers.email,
        active_at_as_of.plan_code,
        active_at_as_of.plan_tier,
        active_at_as_of.monthly_price_amount,
        active_at_as_of.probability as churn_probability,
        active_at_as_of.prediction as is_predicted_to_churn,
        case
            when active_at_as_of.probability >= {{ thresholds['high'] }} then 'high'
            when active_at_as_of.probability >= {{ thresholds['medium'] }} then 'medium'
            else 'low'
        end as risk_band,
        -- expected subscription revenue lost over the next window if nothing is done
        cast(round(
            active_at_as_of.probability
            * active_at_as_of.monthly_price_amount
            * {{ window_days }} / 30.0,
            2
        ) as double) as revenue_at_stake_amount,
        active_at_as_of.model_version,
        active_at_as_of.scored_at

    from active_at_as_of
    inner join customers
        on active_at_as_of.customer_id = customers.customer_id
    -- Historical scores of customers who have churned since are no longer actionable.
    where customers.churned_at is null

)

select * from final
