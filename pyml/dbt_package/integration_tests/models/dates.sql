-- parse_timestamp / parse_date on every supported format, impossible and out-of-range dates
-- and custom bounds; default__parse_timestamp (ISO text only) beside the dispatched one.
with

inputs as (

    select
        raw_value as raw_key,
        replace(replace(raw_value, '{sp}', ' '), '{empty}', '') as raw_value
    from {{ ref('input_dates') }}

),

final as (

    select
        raw_key as raw_value,
        {{ pyml.parse_timestamp('raw_value') }} as parsed_at,
        {{ pyml.parse_date('raw_value') }} as parsed_date,
        {{ pyml.parse_date('raw_value', min_date='2020-01-01', max_date='2020-12-31') }} as parsed_date_2020,
        {{ pyml.default__parse_timestamp('raw_value', '2000-01-01', '2030-12-31', none) }} as parsed_at_default
    from inputs

)

select * from final
