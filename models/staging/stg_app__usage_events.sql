{%- set event_types = ['login', 'dashboard_view', 'report_run', 'export', 'api_call'] -%}

with

source as (

    select * from {{ ref('raw_usage_events') }}

),

deduplicated as (

    select distinct * from source

),

cleaned as (

    select
        {{ pyml.safe_cast(pyml.null_if_empty('event_id'), 'bigint') }} as event_id,
        {{ pyml.safe_cast(pyml.null_if_empty('customer_id'), 'bigint') }} as customer_id,
        {{ pyml.parse_timestamp('event_at') }} as event_at,
        {{ pyml.clean_category('event_type', event_types) }} as event_type,
        {{ pyml.clean_amount('duration_minutes', min_value=0, max_value=1440) }} as duration_minutes,
        {{ pyml.is_invalid_flag('event_at', pyml.parse_timestamp('event_at')) }} as is_event_at_invalid,
        {{ pyml.is_invalid_flag('event_type', pyml.clean_category('event_type', event_types)) }} as is_event_type_invalid,
        {{ pyml.is_invalid_flag('duration_minutes', pyml.clean_amount('duration_minutes', min_value=0, max_value=1440)) }}
            as is_duration_minutes_invalid

    from deduplicated

),

latest_version as (

    -- Events are immutable: a repeated id is a re-delivery, keep one copy.
    select * from cleaned
    where event_id is not null
    qualify row_number() over (
        partition by event_id
        order by event_at nulls last, duration_minutes nulls last
    ) = 1

),

final as (

    select * from latest_version

)

select * from final
