with

events as (

    select * from {{ ref('stg_app__usage_events') }}

),

customers as (

    select * from {{ ref('stg_app__customers') }}

),

known_customer_events as (

    -- Events without a usable time or customer cannot be placed before or after an as-of
    -- date; orphans are counted in int_orphan_rows_counted.
    select events.*
    from events
    inner join customers
        on events.customer_id = customers.customer_id
    where events.event_at is not null

),

aggregated as (

    select
        customer_id,
        cast(event_at as date) as event_date,
        count(*) as events_count,
        -- exact_sum: the same total whatever order DuckDB's threads add the rows in
        coalesce({{ pyml.exact_sum('duration_minutes') }}, 0) as usage_minutes

    from known_customer_events
    group by
        customer_id,
        cast(event_at as date)

),

final as (

    select * from aggregated

)

select * from final
