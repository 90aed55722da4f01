{#- The lower-cased, trimmed email address when it looks like one, else null. -#}
{% macro clean_email(column) -%}
    {{ return(adapter.dispatch('clean_email', 'pyml_demo')(column)) }}
{%- endmacro %}

{% macro default__clean_email(column) -%}
    {%- set cleaned = pyml_demo.clean_text(column) -%}
    case when {{ cleaned }} like '%_@_%._%' and {{ cleaned }} not like '% %' then {{ cleaned }} end
{%- endmacro %}

{% macro duckdb__clean_email(column) -%}
    {%- set cleaned = pyml_demo.clean_text(column) -%}
    case when regexp_full_match({{ cleaned }}, '[^@\s]+@[^@\s]+\.[a-z]{2,}') then {{ cleaned }} end
{%- endmacro %}
