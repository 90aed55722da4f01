with

source as (

    select * from {{ ref('raw_plans') }}

),

deduplicated as (

    select distinct * from source

),

cleaned as (

    select
        {{ pyml.clean_text('plan_code') }} as plan_code,
        {{ pyml.clean_text('plan_name', case='none') }} as plan_name,
        {{ pyml.clean_category('tier', ['basic', 'pro', 'enterprise']) }} as plan_tier,
        {{ pyml.clean_amount('monthly_price', min_value=0, max_value=100000) }} as monthly_price_amount,
        {{ pyml.is_invalid_flag('tier', pyml.clean_category('tier', ['basic', 'pro', 'enterprise'])) }}
            as is_plan_tier_invalid,
        {{ pyml.is_invalid_flag('monthly_price', pyml.clean_amount('monthly_price', min_value=0, max_value=100000)) }}
            as is_monthly_price_invalid

    from deduplicated

),

latest_version as (

    -- The plan table has no version column: the same code twice keeps the most complete row.
    select * from cleaned
    where plan_code is not null
    qualify row_number() over (
        partition by plan_code
        order by monthly_price_amount desc nulls last, plan_tier asc nulls last, plan_name asc
    ) = 1

),

final as (

    select * from latest_version

)

select * from final
