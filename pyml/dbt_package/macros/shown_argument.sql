{#- An argument as a compiler error shows it: text quoted, with the hint that numbers go without quotes. -#}
{% macro shown_argument(value) -%}
    {{- return(("'" ~ value ~ "' (text: write it without quotes)") if value is string else value) -}}
{%- endmacro %}
