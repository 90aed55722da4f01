-- as_of_window is [as_of - days, as_of) and label_window is [as_of, as_of + days), for
-- dates and timestamps. Returns the cases that disagree.
with

cases as (

    select * from (
        values
        (timestamp '2024-03-31 23:59:59', true, false),
        (timestamp '2024-04-01 00:00:00', false, true),
        (timestamp '2024-01-02 00:00:00', true, false),
        (timestamp '2024-01-01 23:59:59', false, false),
        (timestamp '2024-06-29 23:59:59', false, true),
        (timestamp '2024-06-30 00:00:00', false, false)
    ) as t (event_at, expected_in_features, expected_in_labels)

),

failures as (

    select *
    from cases
    where
        {{ pyml.as_of_window('event_at', "date '2024-04-01'", 90) }} is distinct from expected_in_features
        or {{ pyml.label_window('event_at', "date '2024-04-01'", 90) }} is distinct from expected_in_labels
        or {{ pyml.as_of_window('cast(event_at as date)', "date '2024-04-01'", 90) }}
        is distinct from expected_in_features

)

select * from failures
