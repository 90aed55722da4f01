{#-
    `relation` when it exists in the database, else an empty subquery with `columns`
    (a mapping column name -> SQL type), so that models built on tables written outside dbt
    (ml.churn_predictions, written by `pyml score`) build before those tables exist.
-#}
{% macro relation_or_empty(relation, columns, hint='run `pyml score` first') -%}
    {%- if relation is string or relation.identifier is not defined -%}
        {{ exceptions.raise_compiler_error("relation_or_empty: `relation` must be a relation such as source('ml', 'churn_predictions'), got " ~ relation) }}
    {%- endif -%}
    {%- if columns is not mapping or columns | length == 0 -%}
        {{ exceptions.raise_compiler_error("relation_or_empty: `columns` must be a non-empty mapping of column name -> SQL type, got " ~ columns) }}
    {%- endif -%}
    {{ return(adapter.dispatch('relation_or_empty', 'pyml')(relation, columns, hint)) }}
{%- endmacro %}

{% macro default__relation_or_empty(relation, columns, hint) -%}
    {%- if not execute -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set existing = adapter.get_relation(database=relation.database, schema=relation.schema, identifier=relation.identifier) -%}
    {%- if existing is not none -%}
        {{ return(existing) }}
    {%- endif -%}
    {%- do log(relation.schema ~ "." ~ relation.identifier ~ " does not exist yet: " ~ hint ~ "; building " ~ model.name ~ " empty for now.", info=true) -%}
    {%- set empty -%}
        (
            select
                {%- for name, type in columns.items() %}
                cast(null as {{ type }}) as {{ adapter.quote(name) }}{{ ',' if not loop.last }}
                {%- endfor %}
            where false
        )
    {%- endset -%}
    {{ return(empty) }}
{%- endmacro %}
