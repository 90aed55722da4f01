{#- Raise a compiler error unless `value` is a 'YYYY-MM-DD' string; used by macros that take dates. -#}
{% macro check_date_literal(macro_name, argument, value) -%}
    {%- if value is not string or not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error(macro_name ~ ": `" ~ argument ~ "` must be a 'YYYY-MM-DD' string, got " ~ value) }}
    {%- endif -%}
{%- endmacro %}
