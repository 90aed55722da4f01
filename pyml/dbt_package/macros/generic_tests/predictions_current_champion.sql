{#-
    Fails for each model_version in a predictions relation that is not the version serving
    model `model_name` in <registry_schema>.models: its champion, or its latest version where
    it has none (the rule `pyml score` follows). One failing row per stale version,
    with its row count. Attach it to ml.<name>_predictions (a dbt source) or to the dbt model
    `pyml sql --output` writes (give `model_name` and the model's version column there).
    Passes while the relation does not exist yet (before the first `pyml score`).
-#}
{% test predictions_current_champion(model, column_name=none, model_name=none, version_column='model_version', registry_schema='ml') %}
    {%- set identifier = model.identifier if model.identifier is defined else none -%}
    {%- if model_name is none and identifier is string and (identifier | lower).endswith('_predictions') -%}
        {%- set model_name = identifier[:-('_predictions' | length)] -%}
    {%- endif -%}
    {#- At parse time `model` is a placeholder: the name is checked when the test runs. -#}
    {%- if execute and (model_name is not string or model_name | trim == '') -%}
        {{ exceptions.raise_compiler_error("predictions_current_champion: give `model_name` (the pyml model whose champion must have scored " ~ model ~ "); it is only implied for relations named <model>_predictions") }}
    {%- endif -%}
    {%- set version_column = column_name or version_column -%}
    {%- if version_column is not string or version_column | trim == '' -%}
        {{ exceptions.raise_compiler_error("predictions_current_champion: `version_column` must name the model-version column of " ~ model ~ ", got " ~ version_column) }}
    {%- endif -%}
    {{ return(adapter.dispatch('test_predictions_current_champion', 'pyml')(model, model_name, version_column, registry_schema)) }}
{% endtest %}

{% macro default__test_predictions_current_champion(model, model_name, version_column, registry_schema) %}
    {%- set predictions, registry = none, none -%}
    {%- if execute -%}
        {%- set predictions = adapter.get_relation(database=model.database, schema=model.schema, identifier=model.identifier) -%}
        {%- set registry = adapter.get_relation(database=model.database, schema=registry_schema, identifier='models') -%}
    {%- endif -%}
    {#- A registry from before champions (no status column) serves its latest version. -#}
    {%- set has_status = registry is not none and 'status' in (adapter.get_columns_in_relation(registry) | map(attribute='name') | map('lower') | list) -%}
    {%- if predictions is none %}
    {#- Not scored yet (or compiling without a database): nothing can be stale. -#}
    select
        cast(null as integer) as model_version,
        cast(null as integer) as serving_version,
        0 as n_rows
    where 1 = 0
    {%- else %}
    with

    stored as (
        select
            {{ adapter.quote(version_column) }} as model_version,
            count(*) as n_rows
        from {{ model }}
        group by 1
    ),

    serving as (
    {%- if registry is none %}
        select cast(null as integer) as serving_version
    {%- else %}
        select
            {%- if has_status %}
            coalesce(
                max(case when status = 'champion' then version end),
                max(version)
            ) as serving_version
            {%- else %}
            max(version) as serving_version
            {%- endif %}
        from {{ registry }}
        where model_name = '{{ model_name | replace("'", "''") }}'
    {%- endif %}
    )

    select
        stored.model_version,
        serving.serving_version,
        stored.n_rows
    from stored
    cross join serving
    where stored.model_version is null
        or serving.serving_version is null
        or stored.model_version != serving.serving_version
    {%- endif %}
{% endmacro %}
