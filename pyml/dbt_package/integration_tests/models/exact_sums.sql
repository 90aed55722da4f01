-- exact_sum: ten doubles 0.1 sum to exactly 1.0 (a double sum gives 0.9999999999999999),
-- each value is rounded to `scale` decimals first, and nulls are skipped.
with

inputs as (

    select
        'tenths' as grp,
        0.1::double as v
    from range(10)
    union all
    select
        'mixed' as grp,
        v
    from (values (1.2345678::double), (null), (2.0::double)) as t (v)

),

final as (

    select
        grp,
        {{ pyml.exact_sum('v') }} as total,
        {{ pyml.exact_sum('v', scale=0) }} as total_whole
    from inputs
    group by grp

)

select * from final
