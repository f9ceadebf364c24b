-- Version 4: the table whose lock orders the runs of every gateway's transactions (mod.rs,
-- "Re-run on conflict"): every run locks it SHARE as it begins, the last run of a function that
-- kept conflicting EXCLUSIVE. A table, not an advisory lock: LOCK TABLE, unlike a SELECT, takes
-- no snapshot, so a SERIALIZABLE run takes its snapshot only once it holds its turn, after the
-- runs it waited for have committed. It holds no rows.
CREATE TABLE rxgate.turns ();
