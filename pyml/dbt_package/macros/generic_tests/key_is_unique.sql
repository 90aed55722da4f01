{#-
    Fails for each value of the key `columns` that is null in any of them or found on more
    than one row, with its row count. Passes while the relation does not exist yet: made for
    tables written outside dbt (pyml's ml.* tables, declared as dbt sources before the first
    `pyml train` or `pyml score` creates them), where unique + not_null would fail `dbt build`
    on a fresh clone.
-#}
{% test key_is_unique(model, columns) %}
    {%- if columns is string or columns is not iterable or columns | length == 0 -%}
        {{ exceptions.raise_compiler_error("key_is_unique: `columns` must list the key's columns, got " ~ columns) }}
    {%- endif -%}
    {{ return(adapter.dispatch('test_key_is_unique', 'pyml')(model, columns)) }}
{% endtest %}

{% macro default__test_key_is_unique(model, columns) %}
    {%- set existing = none -%}
    {%- if execute -%}
        {%- set existing = adapter.get_relation(database=model.database, schema=model.schema, identifier=model.identifier) -%}
    {%- endif -%}
    {%- if existing is none %}
    {#- Not written yet (or compiling without a database): no row can break the key. -#}
    select 0 as n_rows where 1 = 0
    {%- else %}
    select
        {%- for column in columns %}
        {{ adapter.quote(column) }},
        {%- endfor %}
        count(*) as n_rows
    from {{ existing }}
    group by
        {%- for column in columns %}
        {{ adapter.quote(column) }}{{ ',' if not loop.last }}
        {%- endfor %}
    having count(*) > 1
        {%- for column in columns %}
        or {{ adapter.quote(column) }} is null
        {%- endfor %}
    {%- endif %}
{% endmacro %}
