with

tickets as (

    select * from {{ ref('stg_app__support_tickets') }}

),

customers as (

    select * from {{ ref('stg_app__customers') }}

),

known_customer_tickets as (

    select tickets.*
    from tickets
    inner join customers
        on tickets.customer_id = customers.customer_id
    where tickets.opened_at is not null

),

aggregated as (

    select
        customer_id,
        cast(opened_at as date) as opened_date,
        count(*) as tickets_count,
        count(*) filter (where ticket_priority in ('high', 'urgent')) as high_priority_tickets_count,
        count(*) filter (where ticket_category = 'billing') as billing_tickets_count,
        count(satisfaction_score) as rated_tickets_count,
        coalesce(sum(satisfaction_score), 0) as satisfaction_score_sum

    from known_customer_tickets
    group by
        customer_id,
        cast(opened_at as date)

),

final as (

    select * from aggregated

)

select * from final
