{#- Fails for each row where the SQL boolean `expression` is not true (false or null). -#}
{% test expression_is_true(model, expression, where_clause=none) %}
    {%- if expression is not string or expression | trim == '' -%}
        {{ exceptions.raise_compiler_error("expression_is_true: `expression` must be a SQL boolean expression, got " ~ expression) }}
    {%- endif -%}
    {{ return(adapter.dispatch('test_expression_is_true', 'pyml')(model, expression, where_clause)) }}
{% endtest %}

{% macro default__test_expression_is_true(model, expression, where_clause) %}
    select *
    from {{ model }}
    where not coalesce({{ expression }}, false)
    {%- if where_clause %}
        and ({{ where_clause }})
    {%- endif %}
{% endmacro %}
