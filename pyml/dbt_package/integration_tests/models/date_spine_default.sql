-- The portable default__date_spine (a recursive CTE) gives the same dates.
select spine_date
from {{ pyml.default__date_spine("'2024-03-31'", "'2025-03-31'", 3) }} as spine
