-- The domain state "done" is named for what it is: the nameservers serve the target, and the
-- short TTLs stay until the settle period has passed (then "ttl_restored", a final state).
UPDATE domains SET data = replace(data, '"state":"done"', '"state":"serving_target"') WHERE state = 'done';
UPDATE domains SET state = 'serving_target' WHERE state = 'done';
