{#- `field` cast to `type`, null when the value does not convert (never an error). -#}
{% macro safe_cast(field, type) -%}
    {%- if field is not string or field | trim == '' or type is not string or type | trim == '' -%}
        {{ exceptions.raise_compiler_error("safe_cast: `field` and `type` must be non-empty SQL strings, got " ~ field ~ " and " ~ type) }}
    {%- endif -%}
    {{ return(adapter.dispatch('safe_cast', 'pyml')(field, type)) }}
{%- endmacro %}

{#- dbt's own safe_cast: a try_cast where the adapter has one (Spark without ANSI mode nulls bad values). -#}
{% macro default__safe_cast(field, type) -%}
    {{ dbt.safe_cast(field, type) }}
{%- endmacro %}

{#- dbt-duckdb ships no safe_cast, so dbt.safe_cast is a plain cast that fails on the first bad value. -#}
{% macro duckdb__safe_cast(field, type) -%}
    try_cast({{ field }} as {{ type }})
{%- endmacro %}
