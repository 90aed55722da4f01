with

customers as (

    select * from {{ ref('stg_app__customers') }}

),

subscriptions as (

    select * from {{ ref('int_subscriptions_enriched') }}

),

subscription_summary as (

    select
        customer_id,
        min(started_at) as first_subscription_started_at,
        count(*) as subscriptions_count,
        -- The customer has churned when their latest subscription was cancelled.
        max(case when is_latest_subscription then plan_code end) as current_plan_code,
        max(
            case
                when is_latest_subscription and subscription_status = 'cancelled'
                    then coalesce(ended_at, started_at)
            end
        ) as churned_at

    from subscriptions
    group by customer_id

),

joined as (

    select
        customers.customer_id,
        customers.email,
        customers.full_name,
        customers.country_code,
        customers.acquisition_channel,
        customers.company_size,
        customers.is_marketing_opt_in,
        customers.signup_date,
        -- A missing or impossible signup date falls back to the first subscription.
        coalesce(
            customers.signup_date,
            cast(subscription_summary.first_subscription_started_at as date)
        ) as customer_since_date,
        subscription_summary.first_subscription_started_at,
        coalesce(subscription_summary.subscriptions_count, 0) as subscriptions_count,
        subscription_summary.current_plan_code,
        subscription_summary.churned_at,
        subscription_summary.churned_at is not null as is_churned,
        (
            customers.is_email_invalid
            or customers.is_country_invalid
            or customers.is_signup_date_invalid
            or customers.is_acquisition_channel_invalid
            or customers.is_company_size_invalid
        ) as has_invalid_fields

    from customers
    left join subscription_summary
        on customers.customer_id = subscription_summary.customer_id

),

final as (

    select * from joined

)

select * from final
