-- Version 3: the database sequence `Txn::unique_sequence` draws from (for every counter name:
-- the values need only be unique and increase in the order drawn), so that no transaction
-- writes a shared counter row for a consent's, an intake's or a pending event's number.
CREATE SEQUENCE rxgate.draws AS bigint MINVALUE 1 NO CYCLE;

-- Moves the sequence past every counter row of `meta` (`sequence/NAME`, 8 bytes big-endian):
-- run here, for a database whose numbers came from those rows until now, and at the end of
-- every import (`rxgate store import`), which raises the rows past the numbers it loaded.
CREATE FUNCTION rxgate.draws_past_counters() RETURNS void LANGUAGE sql AS $$
    SELECT setval('rxgate.draws', greatest(
        (SELECT last_value FROM rxgate.draws),
        (SELECT max(('x' || encode(v, 'hex'))::bit(64)::bigint) FROM rxgate.meta
            WHERE k >= 'sequence/'::bytea AND k < 'sequence0'::bytea AND length(v) = 8)));
$$;

SELECT rxgate.draws_past_counters();
