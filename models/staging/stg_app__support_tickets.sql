{%- set categories = ['billing', 'bug', 'how_to', 'feature_request', 'account'] -%}
{%- set priorities = ['low', 'medium', 'high', 'urgent'] -%}

with

source as (

    select * from {{ ref('raw_support_tickets') }}

),

deduplicated as (

    select distinct * from source

),

cleaned as (

    select
        {{ dbt.safe_cast(null_if_empty('ticket_id'), 'bigint') }} as ticket_id,
        {{ dbt.safe_cast(null_if_empty('customer_id'), 'bigint') }} as customer_id,
        {{ parse_timestamp('opened_at') }} as opened_at,
        {{ clean_category('category', categories) }} as ticket_category,
        {{ clean_category('priority', priorities) }} as ticket_priority,
        cast({{ clean_amount('satisfaction_score', min_value=1, max_value=5) }} as integer) as satisfaction_score,
        {{ is_invalid_flag('opened_at', parse_timestamp('opened_at')) }} as is_opened_at_invalid,
        {{ is_invalid_flag('category', clean_category('category', categories)) }} as is_category_invalid,
        {{ is_invalid_flag('priority', clean_category('priority', priorities)) }} as is_priority_invalid,
        {{ is_invalid_flag('satisfaction_score', clean_amount('satisfaction_score', min_value=1, max_value=5)) }}
            as is_satisfaction_score_invalid

    from deduplicated

),

latest_version as (

    -- Tickets are not updated in this extract: a repeated id is a re-delivery, keep one copy.
    select * from cleaned
    where ticket_id is not null
    qualify row_number() over (
        partition by ticket_id
        order by opened_at nulls last, satisfaction_score nulls last
    ) = 1

),

final as (

    select * from latest_version

)

select * from final
