{#- `amount` converted to USD with the fixed rates of var('pyml_usd_per_unit'); null for unknown currencies. -#}
{% macro convert_to_usd(amount, currency) -%}
    {%- set rates = var('pyml_usd_per_unit') -%}
    {%- if rates is not mapping or rates | length == 0 -%}
        {{ exceptions.raise_compiler_error("convert_to_usd: var `pyml_usd_per_unit` must map currency codes to USD rates, got " ~ rates) }}
    {%- endif -%}
    {%- for code, rate in rates.items() if rate is not number or code is not string or "'" in code -%}
        {{ exceptions.raise_compiler_error("convert_to_usd: var `pyml_usd_per_unit` must map currency codes to numbers, got " ~ code ~ ": " ~ rate) }}
    {%- endfor -%}
    {{ return(adapter.dispatch('convert_to_usd', 'pyml')(amount, currency, rates)) }}
{%- endmacro %}

{% macro default__convert_to_usd(amount, currency, rates) -%}
    ({{ amount }}) * case {{ currency }}
        {%- for code, rate in rates.items() %}
        when '{{ code }}' then {{ rate }}
        {%- endfor %}
    end
{%- endmacro %}
