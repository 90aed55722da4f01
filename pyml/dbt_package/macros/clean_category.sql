{#- The cleaned code when it is one of `accepted_values` (after `synonyms`), else null. -#}
{% macro clean_category(column, accepted_values, synonyms={}, case='lower') -%}
    {%- if accepted_values is string or accepted_values is not iterable or accepted_values | length == 0 -%}
        {{ exceptions.raise_compiler_error("clean_category: `accepted_values` must be a non-empty list of codes, got " ~ accepted_values) }}
    {%- endif -%}
    {%- if synonyms is not mapping -%}
        {{ exceptions.raise_compiler_error("clean_category: `synonyms` must be a mapping of raw code -> accepted code, got " ~ synonyms) }}
    {%- endif -%}
    {%- for canonical in synonyms.values() if canonical not in accepted_values -%}
        {{ exceptions.raise_compiler_error("clean_category: synonym target '" ~ canonical ~ "' is not in accepted_values") }}
    {%- endfor -%}
    {%- for code in (accepted_values | list) + (synonyms.keys() | list) if code is not string or "'" in code -%}
        {{ exceptions.raise_compiler_error("clean_category: codes must be strings without quotes, got " ~ code ~ (" (YAML reads unquoted yes/no/on/off as booleans: quote the code)" if code is boolean else "")) }}
    {%- endfor -%}
    {#- Values are trimmed and case-folded before they are compared: a code in another case
        (or with spaces around it) could never match, and every row would come out null. -#}
    {%- for code in (accepted_values | list) + (synonyms.keys() | list) -%}
        {%- set folded = code | trim -%}
        {%- set folded = folded | lower if case == 'lower' else (folded | upper if case == 'upper' else folded) -%}
        {%- if code != folded -%}
            {{ exceptions.raise_compiler_error("clean_category: code '" ~ code ~ "' can never match: values are trimmed" ~ ((" and " ~ case ~ "-cased") if case != 'none' else "") ~ " before they are compared (case='" ~ case ~ "'); write it as '" ~ folded ~ "', or pass the `case` the codes are written in ('lower', 'upper' or 'none')") }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(adapter.dispatch('clean_category', 'pyml')(column, accepted_values, synonyms, case)) }}
{%- endmacro %}

{% macro default__clean_category(column, accepted_values, synonyms, case) -%}
    {%- set cleaned = pyml.clean_text(column, case) -%}
    case
        {%- for raw_code, canonical in synonyms.items() %}
        when {{ cleaned }} = '{{ raw_code }}' then '{{ canonical }}'
        {%- endfor %}
        when {{ cleaned }} in (
            {%- for value in accepted_values -%}
                '{{ value }}'{{ ', ' if not loop.last }}
            {%- endfor -%}
        ) then {{ cleaned }}
    end
{%- endmacro %}
