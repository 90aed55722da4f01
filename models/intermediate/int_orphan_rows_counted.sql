with

customers as (

    select * from {{ ref('stg_app__customers') }}

),

subscriptions as (

    select * from {{ ref('stg_app__subscriptions') }}

),

usage_events as (

    select * from {{ ref('stg_app__usage_events') }}

),

payments as (

    select * from {{ ref('stg_app__payments') }}

),

support_tickets as (

    select * from {{ ref('stg_app__support_tickets') }}

),

customer_references as (

    select
        'subscriptions' as source_table,
        customer_id
    from subscriptions
    union all
    select
        'usage_events' as source_table,
        customer_id
    from usage_events
    union all
    select
        'payments' as source_table,
        customer_id
    from payments
    union all
    select
        'support_tickets' as source_table,
        customer_id
    from support_tickets

),

counted as (

    select
        customer_references.source_table,
        count(*) as rows_count,
        count(*) filter (where customers.customer_id is null) as orphan_rows_count

    from customer_references
    left join customers
        on customer_references.customer_id = customers.customer_id
    group by customer_references.source_table

),

final as (

    select
        source_table,
        rows_count,
        orphan_rows_count,
        round(orphan_rows_count / nullif(rows_count, 0), 4) as orphan_rows_share

    from counted

)

select * from final
