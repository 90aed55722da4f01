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
        {{ pyml.safe_cast(pyml.null_if_empty('ticket_id'), 'bigint') }} as ticket_id,
        {{ pyml.safe_cast(pyml.null_if_empty('customer_id'), 'bigint') }} as customer_id,
        {{ pyml.parse_timestamp('opened_at') }} as opened_at,
        {{ pyml.clean_category('category', categories) }} as ticket_category,
        {{ pyml.clean_category('priority', priorities) }} as ticket_priority,
        cast({{ pyml.clean_amount('satisfaction_score', min_value=1, max_value=5) }} as integer) as satisfaction_score,
        {{ pyml.is_invalid_flag('opened_at', pyml.parse_timestamp('opened_at')) }} as is_opened_at_invalid,
        {{ pyml.is_invalid_flag('category', pyml.clean_category('category', categories)) }} as is_category_invalid,
        {{ pyml.is_invalid_flag('priority', pyml.clean_category('priority', priorities)) }} as is_priority_invalid,
        {{ pyml.is_invalid_flag('satisfaction_score', pyml.clean_amount('satisfaction_score', min_value=1, max_value=5)) }}
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
