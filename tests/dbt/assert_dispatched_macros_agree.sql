-- The portable default__ versions of the dispatched macros agree with the duckdb__
-- versions on input both understand (ISO dates, plain emails, month steps), so the
-- fallbacks are exercised even though the project runs on DuckDB.
with

spines as (

    select
        'duckdb__date_spine' as implementation,
        spine_date
    from {{ pyml.duckdb__date_spine("'2024-04-01'", "'2025-01-01'", 3) }} as duckdb_spine
    union all
    select
        'default__date_spine' as implementation,
        spine_date
    from {{ pyml.default__date_spine("'2024-04-01'", "'2025-01-01'", 3) }} as default_spine

),

spine_mismatches as (

    select
        'date_spine' as macro_name,
        cast(spine_date as varchar) as value
    from spines
    group by spine_date
    having count(*) != 2
    union all
    select
        'date_spine' as macro_name,
        'row count ' || cast(count(*) as varchar) as value
    from spines
    having count(*) != 8

),

texts as (

    select * from (
        values
        ('2025-03-14'),
        ('2025-03-14 10:22:05'),
        ('1900-01-01'),
        ('2099-01-01'),
        (''),
        ('ann@example.com'),
        (' Ann@Example.COM '),
        ('not-an-email'),
        ('a b@example.com')
    ) as t (raw_value)

),

value_mismatches as (

    select
        'parse_timestamp' as macro_name,
        raw_value as value
    from texts
    where
        raw_value not like '%@%'
        and raw_value not like 'not%'
        and {{ pyml.duckdb__parse_timestamp('raw_value', '2000-01-01', '2030-12-31', ['%Y-%m-%d %H:%M:%S', '%Y-%m-%d']) }}
        is distinct from {{ pyml.default__parse_timestamp('raw_value', '2000-01-01', '2030-12-31', []) }}
    union all
    select
        'clean_email' as macro_name,
        raw_value as value
    from texts
    where {{ pyml.duckdb__clean_email('raw_value') }} is distinct from {{ pyml.default__clean_email('raw_value') }}

),

final as (

    select * from spine_mismatches
    union all
    select * from value_mismatches

)

select * from final
