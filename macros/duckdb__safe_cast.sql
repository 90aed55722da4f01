{#-
    dbt-duckdb has no safe_cast, so dbt.safe_cast falls back to a plain cast that fails on the
    first bad value. dbt's dispatch looks in the root project first, so this makes every
    dbt.safe_cast on DuckDB a try_cast (null when the value does not convert).
-#}
{% macro duckdb__safe_cast(field, type) -%}
    try_cast({{ field }} as {{ type }})
{%- endmacro %}
