{#- The trimmed text, or null when it is empty or only whitespace. -#}
{% macro null_if_empty(column) -%}
    {%- if column is not string or column | trim == '' -%}
        {{ exceptions.raise_compiler_error("null_if_empty: `column` must be a SQL expression string, got " ~ column) }}
    {%- endif -%}
    {{ return(adapter.dispatch('null_if_empty', 'pyml')(column)) }}
{%- endmacro %}

{% macro default__null_if_empty(column) -%}
    nullif(trim({{ column }}), '')
{%- endmacro %}
