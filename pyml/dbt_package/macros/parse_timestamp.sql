{#-
    A timestamp parsed from text in any of several formats; null when blank, unparseable,
    impossible (2025-02-30) or outside [min_date, max_date]: by default the vars
    pyml_min_valid_date and pyml_max_valid_date, else 1900-01-01 and 2099-12-31. A time zone
    offset (+02:00) is not read: such text is null (UTC's 'Z' is read, as UTC).
-#}
{#- `_name`: the macro the user called, for its errors (parse_date passes its own). -#}
{% macro parse_timestamp(column, min_date=none, max_date=none, formats=none, _name='parse_timestamp') -%}
    {%- set min_date = min_date or var('pyml_min_valid_date', '1900-01-01') -%}
    {%- set max_date = max_date or var('pyml_max_valid_date', '2099-12-31') -%}
    {%- do pyml.check_date_literal(_name, 'min_date', min_date) -%}
    {%- do pyml.check_date_literal(_name, 'max_date', max_date) -%}
    {%- if min_date > max_date -%}
        {{ exceptions.raise_compiler_error(_name ~ ": `min_date` (" ~ min_date ~ ") is after `max_date` (" ~ max_date ~ ")") }}
    {%- endif -%}
    {#- An empty list is an error, not the defaults: `formats or [...]` would hide it. -#}
    {%- if formats is none -%}
        {%- set formats = [
            '%Y-%m-%d %H:%M:%S', '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d',
            '%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S.%f', '%Y-%m-%dT%H:%M:%SZ',
            '%Y-%m-%dT%H:%M:%S.%fZ', '%Y-%m-%d %H:%M', '%Y-%m-%dT%H:%M',
            '%m/%d/%Y %H:%M', '%m/%d/%Y', '%d.%m.%Y', '%Y/%m/%d',
        ] -%}
    {%- endif -%}
    {%- if formats is string or formats is not iterable or formats | length == 0 -%}
        {{ exceptions.raise_compiler_error(_name ~ ": `formats` must be a non-empty list of strptime formats, got " ~ formats) }}
    {%- endif -%}
    {{ return(adapter.dispatch('parse_timestamp', 'pyml')(column, min_date, max_date, formats)) }}
{%- endmacro %}

{#- Portable fallback: ISO text only (`formats` is ignored), via the adapter's safe cast. -#}
{% macro default__parse_timestamp(column, min_date, max_date, formats) -%}
    {%- set parsed = pyml.safe_cast(pyml.null_if_empty(column), 'timestamp') -%}
    case
        when {{ parsed }} >= cast('{{ min_date }}' as {{ 'timestamp' }})
            and {{ parsed }} < {{ dbt.dateadd('day', 1, "cast('" ~ max_date ~ "' as " ~ 'timestamp' ~ ")") }}
            then {{ parsed }}
    end
{%- endmacro %}

{% macro duckdb__parse_timestamp(column, min_date, max_date, formats) -%}
    {%- set parsed -%}
        try_strptime({{ pyml.null_if_empty(column) }}, [
            {%- for format in formats -%}
                '{{ format }}'{{ ', ' if not loop.last }}
            {%- endfor -%}
        ])
    {%- endset -%}
    case
        when {{ parsed }} >= timestamp '{{ min_date }}'
            and {{ parsed }} < timestamp '{{ max_date }}' + interval 1 day
            then {{ parsed }}
    end
{%- endmacro %}
