-- Version 2: the mark of an import into the database that has not finished (`rxgate store
-- import`, as store/unfinished.rs marks a folder): a row here, written before the first entry
-- and deleted once the whole dump is in, makes every opening of the store refuse it.
CREATE TABLE rxgate.import_unfinished (
    began_at timestamptz NOT NULL DEFAULT now(),
    began_by text NOT NULL DEFAULT current_user
);
