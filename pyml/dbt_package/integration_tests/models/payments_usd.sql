-- convert_to_usd with var('pyml_usd_per_unit'); unknown or missing currencies give null.
select
    amount,
    currency,
    {{ pyml.convert_to_usd('amount', 'currency') }} as amount_usd,
    -- An expression is converted as a whole: (amount - 20) * rate.
    {{ pyml.convert_to_usd('amount - 20', 'currency') }} as net_usd
from {{ ref('input_payments') }}
