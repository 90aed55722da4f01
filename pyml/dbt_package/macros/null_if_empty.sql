{#- The text without leading and trailing whitespace, or null when nothing else is left. -#}
{% macro null_if_empty(column) -%}
    {%- if column is not string or column | trim == '' -%}
        {{ exceptions.raise_compiler_error("null_if_empty: `column` must be a SQL expression string, got " ~ column) }}
    {%- endif -%}
    {{ return(adapter.dispatch('null_if_empty', 'pyml')(column)) }}
{%- endmacro %}

{#- Portable version: the SQL standard's trim (spaces only). -#}
{% macro default__null_if_empty(column) -%}
    nullif(trim({{ column }}), '')
{%- endmacro %}

{#- Any whitespace: DuckDB's trim removes spaces and Unicode spaces (NBSP) but not tabs, CR or
    LF, which CRLF files and pasted cells bring; the regex removes every run of both kinds. -#}
{% macro duckdb__null_if_empty(column) -%}
    nullif(regexp_replace(trim({{ column }}), '^[\s\v\p{Z}]+|[\s\v\p{Z}]+$', '', 'g'), '')
{%- endmacro %}

{% macro spark__null_if_empty(column) -%}
    nullif(regexp_replace({{ column }}, '^[\\s\\p{Z}]+|[\\s\\p{Z}]+$', ''), '')
{%- endmacro %}
