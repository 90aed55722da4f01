{#- A subquery with one row per date (column `spine_date`) from `start_date` every `step_months` months while <= `end_date`. -#}
{% macro date_spine(start_date, end_date, step_months=1) -%}
    {%- if step_months is not number or step_months <= 0 or step_months != step_months | int -%}
        {{ exceptions.raise_compiler_error("date_spine: `step_months` must be a positive whole number, got " ~ step_months) }}
    {%- endif -%}
    {{ return(adapter.dispatch('date_spine', 'pyml')(start_date, end_date, step_months)) }}
{%- endmacro %}

{#- Portable version: a recursive CTE. -#}
{% macro default__date_spine(start_date, end_date, step_months) -%}
    (
        with recursive spine as (
            select cast({{ start_date }} as date) as spine_date
            union all
            select cast({{ dbt.dateadd('month', step_months, 'spine_date') }} as date) as spine_date
            from spine
            where {{ dbt.dateadd('month', step_months, 'spine_date') }} <= cast({{ end_date }} as date)
        )

        select spine_date from spine
    )
{%- endmacro %}

{% macro duckdb__date_spine(start_date, end_date, step_months) -%}
    (
        select cast(unnest(generate_series(
            cast({{ start_date }} as date),
            cast({{ end_date }} as date),
            interval {{ step_months }} month
        )) as date) as spine_date
    )
{%- endmacro %}

{% macro spark__date_spine(start_date, end_date, step_months) -%}
    (
        select explode(sequence(
            cast({{ start_date }} as date),
            cast({{ end_date }} as date),
            interval {{ step_months }} month
        )) as spine_date
    )
{%- endmacro %}
