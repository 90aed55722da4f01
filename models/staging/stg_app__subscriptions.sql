{%- set statuses = ['active', 'cancelled', 'switched'] -%}

with

source as (

    select * from {{ ref('raw_subscriptions') }}

),

deduplicated as (

    select distinct * from source

),

cleaned as (

    select
        {{ pyml.safe_cast(pyml.null_if_empty('subscription_id'), 'bigint') }}
            as subscription_id,
        {{ pyml.safe_cast(pyml.null_if_empty('customer_id'), 'bigint') }} as customer_id,
        {{ pyml.clean_text('plan_code') }} as plan_code,
        {{ pyml.parse_timestamp('started_at') }} as started_at,
        {{ pyml.parse_timestamp('cancelled_at') }} as cancelled_at,
        {{ pyml.clean_category('status', statuses, synonyms={'canceled': 'cancelled'}) }} as subscription_status,
        {{ pyml.parse_timestamp('updated_at') }} as updated_at,
        {{ pyml.is_invalid_flag('started_at', pyml.parse_timestamp('started_at')) }} as is_started_at_invalid,
        {{ pyml.is_invalid_flag('cancelled_at', pyml.parse_timestamp('cancelled_at')) }} as is_cancelled_at_invalid,
        {{ pyml.is_invalid_flag('status', pyml.clean_category('status', statuses, synonyms={'canceled': 'cancelled'})) }}
            as is_status_invalid

    from deduplicated

),

latest_version as (

    -- A subscription is re-sent on every change (active -> cancelled): keep the newest version.
    select * from cleaned
    where subscription_id is not null
    qualify row_number() over (
        partition by subscription_id
        order by updated_at desc nulls last, cancelled_at desc nulls last
    ) = 1

),

final as (

    select * from latest_version

)

select * from final
