-- Version 4: the table whose lock gives a transaction's runs their turns. It holds no rows:
-- every run locks it in SHARE mode, and the last run of a transaction that conflicted again
-- and again in EXCLUSIVE mode, so that it runs alone among every gateway's runs. A table lock,
-- unlike an advisory lock taken by a SELECT, is taken before the run's snapshot, so the run
-- alone sees everything the runs it waited for committed, and cannot conflict with them.
CREATE TABLE rxgate.turns ();
