{#- A date parsed from text in any of several formats; null when blank, impossible or out of range. -#}
{% macro parse_date(column, min_date=none, max_date=none, formats=none) -%}
    cast({{ pyml_demo.parse_timestamp(column, min_date, max_date, formats) }} as date)
{%- endmacro %}
