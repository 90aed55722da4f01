{%- set channels = ['organic', 'paid_search', 'paid_social', 'referral', 'partner', 'email'] -%}
{%- set company_sizes = ['1-10', '11-50', '51-200', '201-1000', '1000+'] -%}

with

source as (

    select * from {{ ref('raw_customers') }}

),

deduplicated as (

    select distinct * from source

),

cleaned as (

    select
        {{ pyml.safe_cast(pyml.null_if_empty('customer_id'), 'bigint') }} as customer_id,
        {{ pyml.clean_email('email') }} as email,
        {{ pyml.clean_text('full_name', case='none') }} as full_name,
        {{ pyml.clean_category('country', var('pyml_country_codes'), case='upper') }} as country_code,
        {{ pyml.parse_date('signup_date') }} as signup_date,
        {{ pyml.clean_category('acquisition_channel', channels) }} as acquisition_channel,
        {{ pyml.clean_category('company_size', company_sizes) }} as company_size,
        {{ pyml.clean_boolean('marketing_opt_in') }} as is_marketing_opt_in,
        {{ pyml.parse_timestamp('updated_at') }} as updated_at,
        {{ pyml.is_invalid_flag('email', pyml.clean_email('email')) }} as is_email_invalid,
        {{ pyml.is_invalid_flag('country', pyml.clean_category('country', var('pyml_country_codes'), case='upper')) }}
            as is_country_invalid,
        {{ pyml.is_invalid_flag('signup_date', pyml.parse_date('signup_date')) }} as is_signup_date_invalid,
        {{ pyml.is_invalid_flag('acquisition_channel', pyml.clean_category('acquisition_channel', channels)) }}
            as is_acquisition_channel_invalid,
        {{ pyml.is_invalid_flag('company_size', pyml.clean_category('company_size', company_sizes)) }}
            as is_company_size_invalid

    from deduplicated

),

latest_version as (

    -- A customer id appears once per change in the source system: keep the newest version.
    select * from cleaned
    where customer_id is not null
    qualify row_number() over (
        partition by customer_id
        order by updated_at desc nulls last, email asc nulls last
    ) = 1

),

final as (

    select * from latest_version

)

select * from final
