-- null_if_empty, clean_text (each case), clean_boolean, clean_email (dispatched and the
-- portable default__) and is_invalid_flag on dirty text. Seeds cannot hold blank or
-- whitespace-only text, so the inputs spell them {empty} and {sp} (and a tab, CR and LF
-- {tab}, {cr} and {lf}: CRLF files and pasted cells bring them).
with

inputs as (

    select
        raw_value as raw_key,
        replace(replace(replace(replace(replace(raw_value, '{sp}', ' '), '{empty}', ''),
            '{tab}', chr(9)), '{cr}', chr(13)), '{lf}', chr(10)) as raw_value
    from {{ ref('input_text') }}

),

final as (

    select
        raw_key as raw_value,
        {{ pyml.null_if_empty('raw_value') }} as null_if_empty,
        {{ pyml.clean_text('raw_value') }} as clean_text_lower,
        {{ pyml.clean_text('raw_value', case='upper') }} as clean_text_upper,
        {{ pyml.clean_text('raw_value', case='none') }} as clean_text_none,
        {{ pyml.clean_boolean('raw_value') }} as clean_boolean,
        {{ pyml.clean_email('raw_value') }} as clean_email,
        {{ pyml.default__clean_email('raw_value') }} as clean_email_default,
        {{ pyml.is_invalid_flag('raw_value', pyml.clean_email('raw_value')) }} as is_email_invalid
    from inputs

)

select * from final
