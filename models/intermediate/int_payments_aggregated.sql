with

payments as (

    select * from {{ ref('stg_app__payments') }}

),

customers as (

    select * from {{ ref('stg_app__customers') }}

),

known_customer_payments as (

    select payments.*
    from payments
    inner join customers
        on payments.customer_id = customers.customer_id
    where payments.paid_at is not null

),

converted as (

    select
        customer_id,
        cast(paid_at as date) as payment_date,
        payment_status,
        {{ pyml.convert_to_usd('payment_amount', 'currency_code') }} as payment_amount_usd

    from known_customer_payments

),

aggregated as (

    select
        customer_id,
        payment_date,
        count(*) filter (where payment_status = 'succeeded') as succeeded_payments_count,
        count(*) filter (where payment_status = 'failed') as failed_payments_count,
        coalesce(
            {{ pyml.exact_sum("case when payment_status = 'succeeded' then payment_amount_usd end") }},
            0
        ) as succeeded_amount_usd

    from converted
    group by
        customer_id,
        payment_date

),

final as (

    select * from aggregated

)

select * from final
