-- relation_or_empty on a table that exists: the table itself.
select *
from {{ pyml.relation_or_empty(ref('churn_predictions'), {'customer_id': 'integer'}) }} as present
