{#- true/false from the usual spellings (true, t, yes, y, 1 / false, f, no, n, 0), else null. -#}
{% macro clean_boolean(column) -%}
    {%- if column is not string or column | trim == '' -%}
        {{ exceptions.raise_compiler_error("clean_boolean: `column` must be a SQL expression string, got " ~ column) }}
    {%- endif -%}
    {{ return(adapter.dispatch('clean_boolean', 'pyml')(column)) }}
{%- endmacro %}

{% macro default__clean_boolean(column) -%}
    {%- set cleaned = pyml.clean_text(column) -%}
    case
        when {{ cleaned }} in ('true', 't', 'yes', 'y', '1') then true
        when {{ cleaned }} in ('false', 'f', 'no', 'n', '0') then false
    end
{%- endmacro %}
