{#- The lower-cased, trimmed email address when it looks like one, else null. -#}
{% macro clean_email(column) -%}
    {%- if column is not string or column | trim == '' -%}
        {{ exceptions.raise_compiler_error("clean_email: `column` must be a SQL expression string, got " ~ column) }}
    {%- endif -%}
    {{ return(adapter.dispatch('clean_email', 'pyml')(column)) }}
{%- endmacro %}

{% macro default__clean_email(column) -%}
    {%- set cleaned = pyml.clean_text(column) -%}
    case when {{ cleaned }} like '%_@_%._%' and {{ cleaned }} not like '% %' then {{ cleaned }} end
{%- endmacro %}

{% macro duckdb__clean_email(column) -%}
    {%- set cleaned = pyml.clean_text(column) -%}
    case when regexp_full_match({{ cleaned }}, '[^@\s]+@[^@\s]+\.[a-z]{2,}') then {{ cleaned }} end
{%- endmacro %}

{#- Spark's rlike searches; the anchors make it a full match like DuckDB's. -#}
{% macro spark__clean_email(column) -%}
    {%- set cleaned = pyml.clean_text(column) -%}
    case when {{ cleaned }} rlike '^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$' then {{ cleaned }} end
{%- endmacro %}
