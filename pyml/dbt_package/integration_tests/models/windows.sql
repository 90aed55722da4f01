-- as_of_window is [as_of - days, as_of) and label_window is [as_of, as_of + days).
select
    event_at,
    as_of_date,
    {{ pyml.as_of_window('event_at', 'as_of_date', 90) }} as in_features,
    {{ pyml.label_window('event_at', 'as_of_date', 90) }} as in_labels
from {{ ref('input_events') }}
