{#- true when `event_ts` is on or after `as_of` and strictly before `as_of` + `days` days. -#}
{% macro label_window(event_ts, as_of, days) -%}
    {%- if days is not number or days <= 0 or days != days | int -%}
        {{ exceptions.raise_compiler_error("label_window: `days` must be a positive whole number, got " ~ pyml.shown_argument(days)) }}
    {%- endif -%}
    {{ return(adapter.dispatch('label_window', 'pyml')(event_ts, as_of, days)) }}
{%- endmacro %}

{% macro default__label_window(event_ts, as_of, days) -%}
    ({{ event_ts }} >= {{ as_of }} and {{ event_ts }} < {{ dbt.dateadd('day', days, as_of) }})
{%- endmacro %}
