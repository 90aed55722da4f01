{#- Fails for each combination of `combination_of_columns` that appears on more than one row. -#}
{% test unique_combination(model, combination_of_columns) %}
    {%- if combination_of_columns is string or combination_of_columns | length < 2 -%}
        {{ exceptions.raise_compiler_error("unique_combination: `combination_of_columns` must list at least two columns, got " ~ combination_of_columns) }}
    {%- endif -%}
    {{ return(adapter.dispatch('test_unique_combination', 'pyml')(model, combination_of_columns)) }}
{% endtest %}

{% macro default__test_unique_combination(model, combination_of_columns) %}
    select
        {%- for column in combination_of_columns %}
        {{ column }},
        {%- endfor %}
        count(*) as n_rows
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}
    having count(*) > 1
{% endmacro %}
