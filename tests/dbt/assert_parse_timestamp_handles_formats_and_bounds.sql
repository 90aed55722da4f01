-- parse_date / parse_timestamp on literal cases: every supported format, impossible
-- dates, out-of-range dates and custom bounds. Returns the cases that disagree.
with

cases as (

    select * from (
        values
        ('2025-03-14', date '2025-03-14'),
        (' 2025-03-14 ', date '2025-03-14'),
        ('2025-03-14 23:59:59', date '2025-03-14'),
        ('2025-03-14T08:00:00', date '2025-03-14'),
        ('03/14/2025', date '2025-03-14'),
        ('03/14/2025 10:22', date '2025-03-14'),
        ('14.03.2025', date '2025-03-14'),
        ('2025/03/14', date '2025-03-14'),
        ('2024-02-29', date '2024-02-29'),
        ('2025-02-29', null),
        ('2025-02-30', null),
        ('2024-13-01', null),
        ('31/02/2025', null),
        ('1900-01-01', null),
        ('2099-01-01', null),
        ('', null),
        ('   ', null),
        (null, null),
        ('yesterday', null)
    ) as t (raw_value, expected_date)

),

bounded as (

    select * from (
        values
        ('2019-12-31', null),
        ('2020-01-01', date '2020-01-01'),
        ('2020-12-31 23:59:59', date '2020-12-31'),
        ('2021-01-01', null)
    ) as t (raw_value, expected_date)

),

failures as (

    select
        'default bounds' as case_set,
        raw_value,
        expected_date,
        {{ pyml.parse_date('raw_value') }} as actual_date
    from cases
    where {{ pyml.parse_date('raw_value') }} is distinct from expected_date

    union all

    select
        '2020 only' as case_set,
        raw_value,
        expected_date,
        {{ pyml.parse_date('raw_value', min_date='2020-01-01', max_date='2020-12-31') }} as actual_date
    from bounded
    where
        {{ pyml.parse_date('raw_value', min_date='2020-01-01', max_date='2020-12-31') }}
        is distinct from expected_date

)

select * from failures
