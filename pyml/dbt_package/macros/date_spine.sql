{#- A subquery with one row per date (column `spine_date`): `start_date` plus 0, `step_months`,
    2 x `step_months`, ... months while <= `end_date`. Each date is counted from the start, not
    from the date before it, so month-ends stay month-ends: from 2024-03-31 every 3 months gives
    06-30, 09-30, 12-31, 2025-03-31 (a chain of "+3 months" would drift to 12-30, 2025-03-30). -#}
{% macro date_spine(start_date, end_date, step_months=1) -%}
    {%- if step_months is not number or step_months <= 0 or step_months != step_months | int -%}
        {{ exceptions.raise_compiler_error("date_spine: `step_months` must be a positive whole number, got " ~ pyml.shown_argument(step_months)) }}
    {%- endif -%}
    {{ return(adapter.dispatch('date_spine', 'pyml')(start_date, end_date, step_months | int)) }}
{%- endmacro %}

{#- Portable version: a recursive CTE counting the months from the start. -#}
{% macro default__date_spine(start_date, end_date, step_months) -%}
    (
        with recursive spine as (
            select 0 as month_offset, cast({{ start_date }} as date) as spine_date
            union all
            select
                month_offset + {{ step_months }} as month_offset,
                cast({{ dbt.dateadd('month', 'month_offset + ' ~ step_months, 'cast(' ~ start_date ~ ' as date)') }} as date) as spine_date
            from spine
            where {{ dbt.dateadd('month', 'month_offset + ' ~ step_months, 'cast(' ~ start_date ~ ' as date)') }} <= cast({{ end_date }} as date)
        )

        select spine_date from spine
        where spine_date <= cast({{ end_date }} as date)
    )
{%- endmacro %}

{% macro duckdb__date_spine(start_date, end_date, step_months) -%}
    (
        select spine_date
        from (
            select cast(cast({{ start_date }} as date) + to_months(cast(month_offset as integer)) as date) as spine_date
            from (
                select unnest(generate_series(
                    0,
                    date_diff('month', cast({{ start_date }} as date), cast({{ end_date }} as date)),
                    {{ step_months }}
                )) as month_offset
            ) as offsets
        ) as dates
        where spine_date <= cast({{ end_date }} as date)
    )
{%- endmacro %}

{#- Spark's sequence adds i x step to the start (no drift). -#}
{% macro spark__date_spine(start_date, end_date, step_months) -%}
    (
        select explode(sequence(
            cast({{ start_date }} as date),
            cast({{ end_date }} as date),
            interval {{ step_months }} month
        )) as spine_date
    )
{%- endmacro %}
