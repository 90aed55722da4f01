{#- Trimmed text, optionally case-folded; empty or whitespace-only -> null. -#}
{% macro clean_text(column, case='lower') -%}
    {%- if case not in ['lower', 'upper', 'none'] -%}
        {{ exceptions.raise_compiler_error("clean_text: `case` must be 'lower', 'upper' or 'none', got '" ~ case ~ "'") }}
    {%- endif -%}
    {{ return(adapter.dispatch('clean_text', 'pyml')(column, case)) }}
{%- endmacro %}

{% macro default__clean_text(column, case) -%}
    {%- if case == 'none' -%}
        {{ pyml.null_if_empty(column) }}
    {%- else -%}
        {{ case }}({{ pyml.null_if_empty(column) }})
    {%- endif -%}
{%- endmacro %}
