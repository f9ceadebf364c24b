-- Version 3: the database sequence `Txn::unique_sequence` draws from (for every counter name:
-- the values need only be unique and increase in the order drawn), so that no transaction
-- writes a shared counter row for a consent's, an intake's or a pending event's number. An
-- import moves it past every counter it loaded (`rxgate store import`).
CREATE SEQUENCE rxgate.draws AS bigint MINVALUE 1 NO CYCLE;
