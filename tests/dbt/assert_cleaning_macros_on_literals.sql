-- clean_amount, clean_boolean, clean_category and is_invalid_flag on literal cases.
-- Returns the cases that disagree.
with

amounts as (

    select * from (
        values
        ('49.00', 49.0),
        ('$1,234.50', 1234.5),
        (' 0 ', 0.0),
        ('-0.01', null),
        ('-50', null),
        ('999999', null),
        ('1e6', null),
        ('abc', null),
        ('', null)
    ) as t (raw_value, expected_amount)

),

booleans as (

    select * from (
        values
        ('Yes', true),
        (' y ', true),
        ('TRUE', true),
        ('1', true),
        ('no', false),
        ('0', false),
        ('maybe', null),
        ('', null)
    ) as t (raw_value, expected_boolean)

),

codes as (

    select * from (
        values
        (' PRO ', 'pro', false),
        ('Basic', 'basic', false),
        ('canceled', 'cancelled', false),
        ('legacy_x', null, true),
        (' ', null, false)
    ) as t (raw_value, expected_code, expected_invalid)

),

failures as (

    select 'clean_amount' as macro_name, raw_value
    from amounts
    where {{ pyml.clean_amount('raw_value', min_value=0, max_value=100000) }} is distinct from expected_amount

    union all

    select 'clean_boolean' as macro_name, raw_value
    from booleans
    where {{ pyml.clean_boolean('raw_value') }} is distinct from expected_boolean

    union all

    select 'clean_category' as macro_name, raw_value
    from codes
    where
        {{ pyml.clean_category('raw_value', ['basic', 'pro', 'cancelled'], synonyms={'canceled': 'cancelled'}) }}
        is distinct from expected_code
        or {{ pyml.is_invalid_flag('raw_value', pyml.clean_category('raw_value', ['basic', 'pro', 'cancelled'], synonyms={'canceled': 'cancelled'})) }}
        is distinct from expected_invalid

)

select * from failures
