{%- set window_days = var('pyml_label_window_days') -%}

with

usage_days as (

    select * from {{ ref('int_usage_events_aggregated') }}

),

payment_days as (

    select * from {{ ref('int_payments_aggregated') }}

),

observed as (

    -- The data is complete up to the last day with usage or payments.
    select max(observed_date) as last_observed_date
    from (
        select max(event_date) as observed_date from usage_days
        union all
        select max(payment_date) as observed_date from payment_days
    ) as last_dates

),

spine as (

    -- Quarter starts up to the one right after the data ends, which is the date to score.
    select spine_date as as_of_date
    from {{ pyml.date_spine(
        "'" ~ var('pyml_first_as_of_date') ~ "'",
        "(select last_observed_date + 1 from observed)",
        var('pyml_as_of_step_months'),
    ) }} as dates

),

final as (

    select
        spine.as_of_date,
        cast({{ dbt.dateadd('day', window_days, 'spine.as_of_date') }} as date) as label_window_end_date,
        observed.last_observed_date,
        -- Labels look at [as_of_date, as_of_date + window): known only if the data covers it.
        {{ dbt.dateadd('day', window_days, 'spine.as_of_date') }} <= observed.last_observed_date + 1
            as is_label_observed

    from spine
    cross join observed

)

select * from final
