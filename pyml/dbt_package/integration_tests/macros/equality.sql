{#- Fails for each row in `model` but not in `compare_model` or the other way round
    (positional columns, duplicates counted, nulls equal). -#}
{% test equality(model, compare_model) %}
    with

    actual as (select * from {{ model }}),

    expected as (select * from {{ compare_model }}),

    unexpected as (select * from actual except all select * from expected),

    missing as (select * from expected except all select * from actual)

    select 'unexpected' as side, * from unexpected
    union all
    select 'missing' as side, * from missing
{% endtest %}
