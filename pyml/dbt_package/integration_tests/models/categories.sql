{% set plans = ['basic', 'pro', 'enterprise'] %}
-- clean_category (synonyms, lower and upper case) and is_invalid_flag on dirty codes.
with

inputs as (

    select
        raw_value as raw_key,
        replace(replace(raw_value, '{sp}', ' '), '{empty}', '') as raw_value
    from {{ ref('input_categories') }}

),

final as (

    select
        raw_key as raw_value,
        {{ pyml.clean_category('raw_value', plans, synonyms={'biz': 'enterprise'}) }} as plan_code,
        {{ pyml.clean_category('raw_value', ['USD', 'EUR'], case='upper') }} as currency_code,
        {{ pyml.is_invalid_flag('raw_value', pyml.clean_category('raw_value', plans, synonyms={'biz': 'enterprise'})) }}
            as is_plan_invalid
    from inputs

)

select * from final
