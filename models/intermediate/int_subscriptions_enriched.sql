with

subscriptions as (

    select * from {{ ref('stg_app__subscriptions') }}

),

plans as (

    select * from {{ ref('stg_app__plans') }}

),

customers as (

    select * from {{ ref('stg_app__customers') }}

),

known_customer_subscriptions as (

    -- Orphans (customer ids missing from the customer table) are dropped here and counted
    -- in int_orphan_rows_counted.
    select subscriptions.*
    from subscriptions
    inner join customers
        on subscriptions.customer_id = customers.customer_id
    where subscriptions.started_at is not null

),

joined as (

    select
        subscriptions.subscription_id,
        subscriptions.customer_id,
        subscriptions.plan_code,
        plans.plan_name,
        plans.plan_tier,
        plans.monthly_price_amount,
        plans.plan_code is not null as is_plan_known,
        subscriptions.started_at,
        subscriptions.cancelled_at as ended_at,
        subscriptions.subscription_status,
        row_number() over (
            partition by subscriptions.customer_id
            order by subscriptions.started_at, subscriptions.subscription_id
        ) as subscription_number,
        row_number() over (
            partition by subscriptions.customer_id
            order by subscriptions.started_at desc, subscriptions.subscription_id desc
        ) = 1 as is_latest_subscription

    from known_customer_subscriptions as subscriptions
    left join plans
        on subscriptions.plan_code = plans.plan_code

),

final as (

    select * from joined

)

select * from final
