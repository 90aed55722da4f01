{#- true/false from the usual spellings (true, t, yes, y, 1 / false, f, no, n, 0), else null. -#}
{% macro clean_boolean(column) -%}
    {%- set cleaned = pyml_demo.clean_text(column) -%}
    case
        when {{ cleaned }} in ('true', 't', 'yes', 'y', '1') then true
        when {{ cleaned }} in ('false', 'f', 'no', 'n', '0') then false
    end
{%- endmacro %}
