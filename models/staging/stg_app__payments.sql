{%- set currencies = var('pyml_usd_per_unit').keys() | list -%}
{%- set statuses = ['succeeded', 'failed'] -%}

with

source as (

    select * from {{ ref('raw_payments') }}

),

deduplicated as (

    select distinct * from source

),

cleaned as (

    select
        {{ pyml.safe_cast(pyml.null_if_empty('payment_id'), 'bigint') }} as payment_id,
        {{ pyml.safe_cast(pyml.null_if_empty('customer_id'), 'bigint') }} as customer_id,
        {{ pyml.parse_timestamp('paid_at') }} as paid_at,
        {{ pyml.clean_amount('amount', min_value=0, max_value=100000) }} as payment_amount,
        {{ pyml.clean_category('currency', currencies, case='upper') }} as currency_code,
        {{ pyml.clean_category('status', statuses) }} as payment_status,
        {{ pyml.is_invalid_flag('paid_at', pyml.parse_timestamp('paid_at')) }} as is_paid_at_invalid,
        {{ pyml.is_invalid_flag('amount', pyml.clean_amount('amount', min_value=0, max_value=100000)) }} as is_amount_invalid,
        {{ pyml.is_invalid_flag('currency', pyml.clean_category('currency', currencies, case='upper')) }}
            as is_currency_invalid,
        {{ pyml.is_invalid_flag('status', pyml.clean_category('status', statuses)) }} as is_status_invalid

    from deduplicated

),

latest_version as (

    -- Payment rows are immutable: a repeated id is a re-delivery, keep one copy.
    select * from cleaned
    where payment_id is not null
    qualify row_number() over (
        partition by payment_id
        order by paid_at nulls last, payment_amount nulls last
    ) = 1

),

final as (

    select * from latest_version

)

select * from final
