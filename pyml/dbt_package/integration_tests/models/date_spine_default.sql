-- The portable default__date_spine (a recursive CTE) gives the same dates.
select spine_date
from {{ pyml.default__date_spine("'2024-04-01'", "'2025-01-01'", 3) }} as spine
