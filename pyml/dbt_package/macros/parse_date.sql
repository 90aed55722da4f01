{#- A date parsed from text in any of several formats; null when blank, impossible or out of range. -#}
{% macro parse_date(column, min_date=none, max_date=none, formats=none) -%}
    {{ return(adapter.dispatch('parse_date', 'pyml')(column, min_date, max_date, formats)) }}
{%- endmacro %}

{#- parse_timestamp checks the arguments. -#}
{% macro default__parse_date(column, min_date, max_date, formats) -%}
    cast({{ pyml.parse_timestamp(column, min_date, max_date, formats, _name='parse_date') }} as date)
{%- endmacro %}
