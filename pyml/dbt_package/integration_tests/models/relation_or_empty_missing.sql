-- relation_or_empty on a table that does not exist: an empty relation with the columns.
select *
from {{ pyml.relation_or_empty(source('ml', 'never_scored_predictions'), {'customer_id': 'integer', 'probability': 'double'}) }} as missing
