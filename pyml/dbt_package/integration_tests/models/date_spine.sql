-- date_spine every 3 months, end date included.
select spine_date
from {{ pyml.date_spine("'2024-04-01'", "'2025-01-01'", 3) }} as spine
