{#- sum(expression) that does not depend on row order: each value is rounded to `scale`
    decimal places and summed as DECIMAL (exact), and the total comes back as a double.
    DuckDB sums doubles in parallel in whatever order its threads finish, so a plain sum
    can differ in the last bit from one `dbt build` to the next, and with it the data
    fingerprint and every model trained on the table. -#}
{% macro exact_sum(expression, scale=4) -%}
    {%- if scale is not number or scale != scale | int or scale < 0 or scale > 18 -%}
        {{ exceptions.raise_compiler_error("exact_sum: `scale` must be a whole number from 0 to 18, got " ~ pyml.shown_argument(scale)) }}
    {%- endif -%}
    {{ return(adapter.dispatch('exact_sum', 'pyml')(expression, scale | int)) }}
{%- endmacro %}

{% macro default__exact_sum(expression, scale) -%}
    cast(sum(cast({{ expression }} as decimal(38, {{ scale }}))) as double)
{%- endmacro %}
