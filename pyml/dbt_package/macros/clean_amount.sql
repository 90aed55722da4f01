{#- A number parsed from text ('$1,234.50' -> 1234.5), null when unparseable or outside [min_value, max_value]. -#}
{% macro clean_amount(column, min_value=0, max_value=none) -%}
    {%- if min_value is not none and min_value is not number -%}
        {{ exceptions.raise_compiler_error("clean_amount: `min_value` must be a number or none, got " ~ min_value) }}
    {%- endif -%}
    {%- if max_value is not none and max_value is not number -%}
        {{ exceptions.raise_compiler_error("clean_amount: `max_value` must be a number or none, got " ~ max_value) }}
    {%- endif -%}
    {%- if min_value is number and max_value is number and min_value > max_value -%}
        {{ exceptions.raise_compiler_error("clean_amount: `min_value` (" ~ min_value ~ ") is greater than `max_value` (" ~ max_value ~ ")") }}
    {%- endif -%}
    {{ return(adapter.dispatch('clean_amount', 'pyml')(column, min_value, max_value)) }}
{%- endmacro %}

{% macro default__clean_amount(column, min_value, max_value) -%}
    {%- set stripped = dbt.replace(dbt.replace(pyml.null_if_empty(column), "'$'", "''"), "','", "''") -%}
    {%- set parsed = pyml.safe_cast(stripped, 'double') -%}
    case
        when {{ parsed }} is null then null
        {#- 'nan', 'inf', '1e400': NaN sorts above every number, so this catches it too. #}
        when not ({{ parsed }} between -1.7976931348623157e308 and 1.7976931348623157e308) then null
        {%- if min_value is not none %}
        when {{ parsed }} < {{ min_value }} then null
        {%- endif %}
        {%- if max_value is not none %}
        when {{ parsed }} > {{ max_value }} then null
        {%- endif %}
        else {{ parsed }}
    end
{%- endmacro %}
