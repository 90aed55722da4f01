{%- set window_days = var('pyml_label_window_days') -%}

with

customers as (

    select * from {{ ref('int_customers_enriched') }}

),

subscriptions as (

    select * from {{ ref('int_subscriptions_enriched') }}

),

usage_days as (

    select * from {{ ref('int_usage_events_aggregated') }}

),

payment_days as (

    select * from {{ ref('int_payments_aggregated') }}

),

ticket_days as (

    select * from {{ ref('int_support_tickets_aggregated') }}

),

as_of_dates as (

    select * from {{ ref('int_as_of_dates') }}

),

active_customers as (

    -- Customers who started before the as-of date and had not churned before it.
    select
        customers.customer_id,
        as_of_dates.as_of_date,
        as_of_dates.is_label_observed,
        customers.customer_since_date,
        customers.country_code,
        customers.acquisition_channel,
        customers.company_size,
        customers.churned_at

    from customers
    cross join as_of_dates
    where
        customers.customer_since_date < as_of_dates.as_of_date
        and customers.first_subscription_started_at < as_of_dates.as_of_date
        and (customers.churned_at is null or customers.churned_at >= as_of_dates.as_of_date)

),

current_plans as (

    -- The subscription that was running at the as-of date, and how many came before it.
    select
        active_customers.customer_id,
        active_customers.as_of_date,
        subscriptions.plan_code,
        subscriptions.plan_tier,
        subscriptions.monthly_price_amount,
        cast(subscriptions.started_at as date) as plan_started_date,
        count(*) over (
            partition by active_customers.customer_id, active_customers.as_of_date
        ) - 1 as plan_changes_count

    from active_customers
    inner join subscriptions
        on
            active_customers.customer_id = subscriptions.customer_id
            and active_customers.as_of_date > subscriptions.started_at
    qualify row_number() over (
        partition by active_customers.customer_id, active_customers.as_of_date
        order by subscriptions.started_at desc, subscriptions.subscription_id desc
    ) = 1

),

usage_windows as (

    select
        active_customers.customer_id,
        active_customers.as_of_date,
        count(
            case when {{ pyml.as_of_window('usage_days.event_date', 'active_customers.as_of_date', 30) }} then 1 end
        ) as usage_active_days_30d,
        sum(
            case
                when {{ pyml.as_of_window('usage_days.event_date', 'active_customers.as_of_date', 30) }}
                    then usage_days.events_count
                else 0
            end
        ) as usage_events_30d,
        sum(
            case
                when {{ pyml.as_of_window('usage_days.event_date', 'active_customers.as_of_date', window_days) }}
                    then usage_days.events_count
                else 0
            end
        ) as usage_events_90d,
        {{ pyml.exact_sum(
            "case when " ~ pyml.as_of_window('usage_days.event_date', 'active_customers.as_of_date', 30)
            ~ " then usage_days.usage_minutes else 0 end"
        ) }} as usage_minutes_30d,
        {{ pyml.exact_sum(
            "case when " ~ pyml.as_of_window('usage_days.event_date', 'active_customers.as_of_date', window_days)
            ~ " then usage_days.usage_minutes else 0 end"
        ) }} as usage_minutes_90d,
        max(usage_days.event_date) as last_event_date

    from active_customers
    left join usage_days
        on
            active_customers.customer_id = usage_days.customer_id
            and active_customers.as_of_date > usage_days.event_date
    group by
        active_customers.customer_id,
        active_customers.as_of_date

),

payment_windows as (

    select
        active_customers.customer_id,
        active_customers.as_of_date,
        sum(
            case
                when {{ pyml.as_of_window('payment_days.payment_date', 'active_customers.as_of_date', window_days) }}
                    then payment_days.succeeded_payments_count
                else 0
            end
        ) as payments_succeeded_90d,
        sum(
            case
                when {{ pyml.as_of_window('payment_days.payment_date', 'active_customers.as_of_date', window_days) }}
                    then payment_days.failed_payments_count
                else 0
            end
        ) as payments_failed_90d,
        {{ pyml.exact_sum(
            "case when " ~ pyml.as_of_window('payment_days.payment_date', 'active_customers.as_of_date', window_days)
            ~ " then payment_days.succeeded_amount_usd else 0 end"
        ) }} as payment_amount_90d,
        {{ pyml.exact_sum(
            "case when " ~ pyml.label_window('payment_days.payment_date', 'active_customers.as_of_date', window_days)
            ~ " then payment_days.succeeded_amount_usd else 0 end"
        ) }} as revenue_in_label_window

    from active_customers
    left join payment_days
        on
            active_customers.customer_id = payment_days.customer_id
            -- the feature window before the as-of date and the label window after it
            and {{ dbt.dateadd('day', -window_days, 'active_customers.as_of_date') }} <= payment_days.payment_date
            and {{ dbt.dateadd('day', window_days, 'active_customers.as_of_date') }} > payment_days.payment_date
    group by
        active_customers.customer_id,
        active_customers.as_of_date

),

ticket_windows as (

    select
        active_customers.customer_id,
        active_customers.as_of_date,
        coalesce(sum(ticket_days.tickets_count), 0) as tickets_90d,
        coalesce(sum(ticket_days.high_priority_tickets_count), 0) as high_priority_tickets_90d,
        coalesce(sum(ticket_days.billing_tickets_count), 0) as billing_tickets_90d,
        sum(ticket_days.satisfaction_score_sum)
        / nullif(sum(ticket_days.rated_tickets_count), 0) as avg_satisfaction_90d

    from active_customers
    left join ticket_days
        on
            active_customers.customer_id = ticket_days.customer_id
            and {{ pyml.as_of_window('ticket_days.opened_date', 'active_customers.as_of_date', window_days) }}
    group by
        active_customers.customer_id,
        active_customers.as_of_date

),

final as (

    select
        active_customers.customer_id,
        active_customers.as_of_date,

        -- categorical features
        current_plans.plan_code,
        current_plans.plan_tier,
        active_customers.country_code,
        active_customers.acquisition_channel,
        active_customers.company_size,

        -- account
        cast(current_plans.monthly_price_amount as double) as monthly_price_amount,
        cast(
            {{ dbt.datediff('active_customers.customer_since_date', 'active_customers.as_of_date', 'day') }} as integer
        ) as tenure_days,
        cast(
            {{ dbt.datediff('current_plans.plan_started_date', 'active_customers.as_of_date', 'day') }} as integer
        ) as days_on_current_plan,
        cast(current_plans.plan_changes_count as integer) as plan_changes_count,

        -- usage, strictly before the as-of date
        cast(coalesce(usage_windows.usage_events_30d, 0) as integer) as usage_events_30d,
        cast(coalesce(usage_windows.usage_events_90d, 0) as integer) as usage_events_90d,
        cast(usage_windows.usage_active_days_30d as integer) as usage_active_days_30d,
        cast(coalesce(usage_windows.usage_minutes_30d, 0) as double) as usage_minutes_30d,
        cast(coalesce(usage_windows.usage_minutes_90d, 0) as double) as usage_minutes_90d,
        -- minutes in the last 30 days against the monthly average of the 60 days before:
        -- < 1 means falling usage; null without usage in those 60 days
        cast(
            usage_windows.usage_minutes_30d
            / nullif((usage_windows.usage_minutes_90d - usage_windows.usage_minutes_30d) / 2.0, 0)
            as double
        ) as usage_trend_ratio,
        cast(
            {{ dbt.datediff('usage_windows.last_event_date', 'active_customers.as_of_date', 'day') }} as integer
        ) as days_since_last_event,
        cast(
            usage_windows.usage_minutes_90d / nullif(current_plans.monthly_price_amount, 0) as double
        ) as usage_minutes_per_price_90d,

        -- billing, strictly before the as-of date
        cast(payment_windows.payments_succeeded_90d as integer) as payments_succeeded_90d,
        cast(payment_windows.payments_failed_90d as integer) as payments_failed_90d,
        cast(round(payment_windows.payment_amount_90d, 2) as double) as payment_amount_90d,

        -- support, strictly before the as-of date
        cast(ticket_windows.tickets_90d as integer) as tickets_90d,
        cast(ticket_windows.high_priority_tickets_90d as integer) as high_priority_tickets_90d,
        cast(ticket_windows.billing_tickets_90d as integer) as billing_tickets_90d,
        cast(ticket_windows.avg_satisfaction_90d as double) as avg_satisfaction_90d,

        -- labels, on or after the as-of date; null while the window is not fully observed
        case
            when active_customers.is_label_observed
                then coalesce(
                    {{ pyml.label_window('active_customers.churned_at', 'active_customers.as_of_date', window_days) }},
                    false
                )
        end as churned_next_90d,
        case
            when active_customers.is_label_observed
                then cast(round(payment_windows.revenue_in_label_window, 2) as double)
        end as revenue_next_90d

    from active_customers
    left join current_plans
        on
            active_customers.customer_id = current_plans.customer_id
            and active_customers.as_of_date = current_plans.as_of_date
    left join usage_windows
        on
            active_customers.customer_id = usage_windows.customer_id
            and active_customers.as_of_date = usage_windows.as_of_date
    left join payment_windows
        on
            active_customers.customer_id = payment_windows.customer_id
            and active_customers.as_of_date = payment_windows.as_of_date
    left join ticket_windows
        on
            active_customers.customer_id = ticket_windows.customer_id
            and active_customers.as_of_date = ticket_windows.as_of_date

)

select * from final
