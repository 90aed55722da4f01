{#- true when `event_ts` is strictly before `as_of` and no more than `days` days before it. -#}
{% macro as_of_window(event_ts, as_of, days) -%}
    {%- if days is not number or days <= 0 or days != days | int -%}
        {{ exceptions.raise_compiler_error("as_of_window: `days` must be a positive whole number, got " ~ pyml.shown_argument(days)) }}
    {%- endif -%}
    {{ return(adapter.dispatch('as_of_window', 'pyml')(event_ts, as_of, days)) }}
{%- endmacro %}

{% macro default__as_of_window(event_ts, as_of, days) -%}
    ({{ event_ts }} < {{ as_of }} and {{ event_ts }} >= {{ dbt.dateadd('day', -days, as_of) }})
{%- endmacro %}
