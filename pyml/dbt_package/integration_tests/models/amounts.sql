-- clean_amount (default bounds, [0, 100000], no lower bound) and safe_cast on dirty numbers
-- (DuckDB's cast rounds decimal text to a whole number: '49.00' -> 49, '-0.01' -> 0). Text that
-- parses to NaN or an infinity ('nan', 'inf', '1e400') is no amount: null.
with

inputs as (

    select
        raw_value as raw_key,
        replace(replace(raw_value, '{sp}', ' '), '{empty}', '') as raw_value
    from {{ ref('input_amounts') }}

),

final as (

    select
        raw_key as raw_value,
        {{ pyml.clean_amount('raw_value') }} as amount,
        {{ pyml.clean_amount('raw_value', min_value=0, max_value=100000) }} as amount_bounded,
        {{ pyml.clean_amount('raw_value', min_value=none) }} as amount_unbounded,
        {{ pyml.safe_cast(pyml.null_if_empty('raw_value'), 'bigint') }} as amount_integer
    from inputs

)

select * from final
