-- date_spine every 3 months from a month-end, end date included: each date counts its months
-- from the start, so the month-ends stay month-ends (not 12-30, 2025-03-30).
select spine_date
from {{ pyml.date_spine("'2024-03-31'", "'2025-03-31'", 3) }} as spine
