{#- Trimmed text, optionally case-folded; empty or whitespace-only -> null. -#}
{% macro clean_text(column, case='lower') -%}
    {%- if case not in ['lower', 'upper', 'none'] -%}
        {{ exceptions.raise_compiler_error("clean_text: `case` must be 'lower', 'upper' or 'none', got '" ~ case ~ "'") }}
    {%- endif -%}
    {%- if case == 'none' -%}
        {{ pyml_demo.null_if_empty(column) }}
    {%- else -%}
        {{ case }}({{ pyml_demo.null_if_empty(column) }})
    {%- endif -%}
{%- endmacro %}
