{#- true when the raw value was given (not blank) but its cleaned value is null. -#}
{% macro is_invalid_flag(raw_column, cleaned_expression) -%}
    {%- if cleaned_expression is not string or cleaned_expression | trim == '' -%}
        {{ exceptions.raise_compiler_error("is_invalid_flag: `cleaned_expression` must be the SQL of the cleaned value, got " ~ cleaned_expression) }}
    {%- endif -%}
    {{ return(adapter.dispatch('is_invalid_flag', 'pyml')(raw_column, cleaned_expression)) }}
{%- endmacro %}

{% macro default__is_invalid_flag(raw_column, cleaned_expression) -%}
    ({{ pyml.null_if_empty(raw_column) }} is not null and ({{ cleaned_expression }}) is null)
{%- endmacro %}
