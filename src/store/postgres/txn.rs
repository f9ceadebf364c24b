//! One run of a transaction function on one connection: reads go to the database at once (one
//! round trip each, inside the SERIALIZABLE transaction the run began), writes are buffered in
//! the run's own overlay (so that they cannot fail, and savepoints cost no round trip) and sent
//! together at the end, each table's as one statement, pipelined, before the COMMIT.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;

use deadpool_postgres::Object;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;

use super::lanes::{LaneCell, LaneRows};
use super::schema::{Statements, TableSql};
use super::{Error, database_error};
use crate::store::{ColumnType, Columns, Entry, Savepoint, Savepoints, Table, Txn, Value};

/// A column's value, owned: what a buffered row keeps of [`Value`].
#[derive(Clone, Debug, PartialEq)]
enum Owned {
    Text(String),
    Integer(i64),
    Bytes(Vec<u8>),
    Null,
}

/// A buffered write: the value and, for a table that declares columns, the row's columns;
/// `None` deletes the key.
#[derive(Clone, Debug)]
struct Written {
    value: Vec<u8>,
    columns: Option<Vec<Owned>>,
}

/// The buffered writes by table, the tables in their declaration order and the keys in key
/// order: every transaction sends (and so locks) rows in the same order, which spares most
/// deadlocks between them.
type Writes = BTreeMap<usize, (Table, BTreeMap<Vec<u8>, Option<Written>>)>;

/// The lane's rows a run read or wrote, by table and key: the table, and the value read.
type SeenLaneRows = BTreeMap<(usize, Vec<u8>), (Table, Option<Option<Vec<u8>>>)>;

/// A transaction function's view of the database during one run.
pub(super) struct PgTxn<'a> {
    client: &'a Object,
    runtime: &'a Handle,
    sql: &'a Statements,
    /// The lane the function holds for all its runs ([`Txn::lane`]).
    lane: &'a LaneCell<'a>,
    /// The lane's rows this run read or wrote ([`Txn::get_lane_row`]), with the value read
    /// (`None` when only written).
    lane_rows: RefCell<SeenLaneRows>,
    writes: Writes,
    savepoints: Savepoints<Writes>,
    /// The first read that failed: the run's outcome then is this error (a serialization
    /// failure is retried), whatever the function made of it.
    failed: OnceCell<Error>,
}

impl<'a> PgTxn<'a> {
    pub(super) fn new(
        client: &'a Object,
        runtime: &'a Handle,
        sql: &'a Statements,
        lane: &'a LaneCell<'a>,
    ) -> Self {
        PgTxn {
            client,
            runtime,
            sql,
            lane,
            lane_rows: RefCell::new(BTreeMap::new()),
            writes: Writes::new(),
            savepoints: Savepoints::new(),
            failed: OnceCell::new(),
        }
    }

    /// The error a read met, if one did.
    pub(super) fn failed(&mut self) -> Option<Error> {
        self.failed.take()
    }

    /// Runs `query` with `params` and returns its rows; a failure is kept as the run's outcome.
    fn query(
        &self,
        query: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        if let Some(error) = self.failed.get() {
            return Err(error.clone());
        }
        let rows = self.runtime.block_on(async {
            let statement = self.client.prepare_cached(query).await?;
            self.client.query(&statement, params).await
        });
        rows.map_err(|e| self.failed.get_or_init(|| database_error(&e)).clone())
    }

    fn table(&self, table: Table) -> &TableSql {
        self.sql.of(table)
    }

    /// The stored entries in `[lo, hi)` (`hi` `None`: to the end), merged with this run's
    /// writes, at most `limit`.
    fn scan(
        &self,
        table: Table,
        lo: &[u8],
        hi: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        if limit == 0 || hi.is_some_and(|hi| lo >= hi) {
            return Ok(Vec::new());
        }
        let bounds = (
            Bound::Included(lo),
            hi.map_or(Bound::Unbounded, Bound::Excluded),
        );
        let mine: Vec<_> = self
            .rows(table)
            .map(|w| w.range::<[u8], _>(bounds).collect())
            .unwrap_or_default();
        // Each of this run's deletions hides at most one stored row: read that many more.
        let hidden = mine.iter().filter(|(_, w)| w.is_none()).count();
        let wanted = i64::try_from(limit.saturating_add(hidden)).unwrap_or(i64::MAX);
        let sql = self.table(table);
        let rows = match hi {
            Some(hi) => self.query(&sql.scan, &[&lo, &hi, &wanted])?,
            None => self.query(&sql.scan_open, &[&lo, &wanted])?,
        };
        let stored = rows.into_iter().map(|r| (r.get::<_, Vec<u8>>(0), r.get(1)));
        Ok(merge(stored, mine, limit))
    }

    /// Sends every buffered write, each table's upserts and deletions as one statement each,
    /// all pipelined in one round trip.
    pub(super) fn send_writes(&self) -> Result<(), tokio_postgres::Error> {
        let mut batches = Vec::new();
        for (table, rows) in self.writes.values() {
            let sql = self.table(*table);
            let (upserts, deletes): (Vec<_>, Vec<_>) = rows.iter().partition(|(_, w)| w.is_some());
            if !deletes.is_empty() {
                let keys: Vec<&[u8]> = deletes.iter().map(|(k, _)| k.as_slice()).collect();
                batches.push((sql.delete.as_str(), vec![Param::Keys(keys)]));
            }
            if !upserts.is_empty() {
                batches.push((sql.upsert.as_str(), upsert_params(sql, &upserts)));
            }
        }
        self.runtime.block_on(async {
            // Prepared first (once per connection), so that the statements go out in the
            // order listed: after one fails, the later ones only report the aborted
            // transaction, and the first error is the cause.
            let mut statements = Vec::with_capacity(batches.len());
            for (query, _) in &batches {
                statements.push(self.client.prepare_cached(query).await?);
            }
            let sent = batches
                .iter()
                .zip(&statements)
                .map(|((_, params), statement)| {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(Param::as_sql).collect();
                    async move { self.client.execute(statement, &params).await }
                });
            first_cause(futures_util::future::join_all(sent).await)
        })
    }

    /// Whether the run wrote anything.
    pub(super) fn wrote(&self) -> bool {
        self.writes.values().any(|(_, rows)| !rows.is_empty())
    }

    /// The lane's rows as this run leaves them: what it wrote, else what it read; for the lane
    /// to remember once the run has committed.
    pub(super) fn lane_rows(&self) -> LaneRows {
        let seen = self.lane_rows.borrow();
        seen.iter()
            .filter_map(|((_, key), (table, read))| {
                let value = match self.rows(*table).and_then(|w| w.get(key)) {
                    Some(written) => written.as_ref().map(|w| w.value.clone()),
                    None => read.clone()?,
                };
                Some(((*table, key.clone()), value))
            })
            .collect()
    }

    /// The buffered writes of `table`, if any.
    fn rows(&self, table: Table) -> Option<&BTreeMap<Vec<u8>, Option<Written>>> {
        self.writes.get(&index(table)).map(|(_, rows)| rows)
    }

    /// The buffered writes of `table`, made if need be.
    fn rows_mut(&mut self, table: Table) -> &mut BTreeMap<Vec<u8>, Option<Written>> {
        &mut self
            .writes
            .entry(index(table))
            .or_insert_with(|| (table, BTreeMap::new()))
            .1
    }
}

/// The position of `table` in [`Table::ALL`].
fn index(table: Table) -> usize {
    Table::ALL
        .iter()
        .position(|t| *t == table)
        .expect("every table is listed")
}

/// The error that caused a pipelined group of statements to fail, if one did: the statements
/// after a failed one only report the aborted transaction (SQLSTATE 25P02), so a conflict, or
/// else the first other error, is the cause.
fn first_cause(
    results: Vec<Result<u64, tokio_postgres::Error>>,
) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::error::SqlState;
    let mut errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    let conflict = |e: &tokio_postgres::Error| {
        matches!(
            e.code(),
            Some(
                &SqlState::T_R_SERIALIZATION_FAILURE
                    | &SqlState::T_R_DEADLOCK_DETECTED
                    | &SqlState::LOCK_NOT_AVAILABLE
            )
        )
    };
    let cause = errors
        .iter()
        .position(conflict)
        .or_else(|| {
            errors
                .iter()
                .position(|e| e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
        })
        .or((!errors.is_empty()).then_some(0));
    match cause {
        Some(at) => Err(errors.swap_remove(at)),
        None => Ok(()),
    }
}

/// One array parameter of a batched write.
enum Param<'a> {
    Keys(Vec<&'a [u8]>),
    Text(Vec<Option<&'a str>>),
    Integer(Vec<Option<i64>>),
    Bytes(Vec<Option<&'a [u8]>>),
}

impl Param<'_> {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Keys(v) => v,
            Param::Text(v) => v,
            Param::Integer(v) => v,
            Param::Bytes(v) => v,
        }
    }
}

/// The arrays of an upsert: keys, values, then each declared column's values.
fn upsert_params<'a>(
    sql: &TableSql,
    rows: &[(&'a Vec<u8>, &'a Option<Written>)],
) -> Vec<Param<'a>> {
    let written: Vec<(&'a Vec<u8>, &'a Written)> = rows
        .iter()
        .filter_map(|(k, w)| Some((*k, w.as_ref()?)))
        .collect();
    let mut params = vec![
        Param::Keys(written.iter().map(|(k, _)| k.as_slice()).collect()),
        Param::Keys(written.iter().map(|(_, w)| w.value.as_slice()).collect()),
    ];
    for (i, column) in sql.columns.iter().enumerate() {
        let values = written
            .iter()
            .map(|(_, w)| w.columns.as_ref().map(|c| &c[i]));
        params.push(match column.kind {
            ColumnType::Text | ColumnType::Date => Param::Text(
                values
                    .map(|v| match v {
                        Some(Owned::Text(t)) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnType::Integer => Param::Integer(
                values
                    .map(|v| match v {
                        Some(Owned::Integer(n)) => Some(*n),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnType::Bytes => Param::Bytes(
                values
                    .map(|v| match v {
                        Some(Owned::Bytes(b)) => Some(b.as_slice()),
                        _ => None,
                    })
                    .collect(),
            ),
        });
    }
    params
}

/// Stored entries (in key order) with a run's own writes in the same range (in key order)
/// merged over them, at most `limit`.
fn merge(
    stored: impl Iterator<Item = Entry>,
    mine: Vec<(&Vec<u8>, &Option<Written>)>,
    limit: usize,
) -> Vec<Entry> {
    let mut stored = stored.peekable();
    let mut mine = mine.into_iter().peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        let take_mine = match (stored.peek(), mine.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((s, _)), Some((m, _))) => m.as_slice() <= s.as_slice(),
        };
        if take_mine {
            let (key, written) = mine.next().expect("peeked");
            stored.next_if(|(s, _)| s == key);
            if let Some(w) = written {
                out.push((key.clone(), w.value.clone()));
            }
        } else {
            out.extend(stored.next());
        }
    }
    out
}

impl Txn for PgTxn<'_> {
    /// From the database sequence `rxgate.draws`, one for every name: unique and increasing
    /// in the order drawn across every gateway, and written by no transaction (nextval is not
    /// rolled back, so a re-run leaves a gap). The counter rows stay as an import left them.
    fn unique_sequence(&mut self, _name: &str) -> Result<u64, Error> {
        let rows = self.query("SELECT nextval('rxgate.draws')", &[])?;
        let drawn: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| Error::Engine("nextval answered no row".into()))?;
        u64::try_from(drawn).map_err(|_| Error::Corrupt(format!("rxgate.draws gave {drawn}")))
    }

    fn lane(&self) -> u32 {
        self.lane.number()
    }

    fn get_lane_row(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(written) = self.rows(table).and_then(|w| w.get(key)) {
            return Ok(written.as_ref().map(|w| w.value.clone()));
        }
        let value = match self.lane.remembered(table, key) {
            Some(value) => value,
            None => self.get(table, key)?,
        };
        self.lane_rows
            .borrow_mut()
            .insert((index(table), key.to_vec()), (table, Some(value.clone())));
        Ok(value)
    }

    fn put_lane_row(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.lane_rows
            .borrow_mut()
            .entry((index(table), key.to_vec()))
            .or_insert((table, None));
        self.put(table, key, value);
    }

    fn serial(&self) -> bool {
        false
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(written) = self.rows(table).and_then(|w| w.get(key)) {
            return Ok(written.as_ref().map(|w| w.value.clone()));
        }
        let rows = self.query(&self.table(table).get, &[&key])?;
        Ok(rows.into_iter().next().map(|r| r.get(0)))
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        let written = Written {
            value: value.to_vec(),
            columns: None,
        };
        self.rows_mut(table).insert(key.to_vec(), Some(written));
    }

    fn put_row(&mut self, table: Table, key: &[u8], value: &[u8], columns: Columns<'_>) {
        let owned = columns.values.iter().map(owned).collect();
        let written = Written {
            value: value.to_vec(),
            columns: Some(owned),
        };
        debug_assert_eq!(columns.declared, self.table(table).columns);
        self.rows_mut(table).insert(key.to_vec(), Some(written));
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        self.rows_mut(table).insert(key.to_vec(), None);
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, Error> {
        let end = prefix_end(prefix);
        self.scan(table, prefix, end.as_deref(), limit)
    }

    fn scan_range(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        self.scan(table, start, Some(end), limit)
    }

    fn savepoint(&mut self) -> Savepoint {
        self.savepoints.take(&self.writes)
    }

    fn rollback_to(&mut self, savepoint: Savepoint) {
        self.savepoints.roll_back(savepoint, &mut self.writes);
    }
}

fn owned(value: &Value<'_>) -> Owned {
    match value {
        Value::Text(t) | Value::Date(t) => Owned::Text((*t).to_owned()),
        Value::Integer(n) => Owned::Integer(*n),
        Value::Bytes(b) => Owned::Bytes(b.to_vec()),
        Value::Null => Owned::Null,
    }
}

/// The smallest key above every key that starts with `prefix`; `None` when there is none (an
/// empty prefix, or one of 0xFF bytes only): the scan then runs to the end of the table.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PgTxn<'_> {
    /// The first table written through [`Txn::put`] although it declares columns.
    pub(super) fn row_without_columns(&self) -> Option<Table> {
        self.writes.values().find_map(|(table, rows)| {
            let declared = self.table(*table).columns;
            rows.values()
                .flatten()
                .any(|w| !declared.is_empty() && w.columns.is_none())
                .then_some(*table)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: &[u8]) -> Option<Written> {
        Some(Written {
            value: value.to_vec(),
            columns: None,
        })
    }

    #[test]
    fn a_scan_merges_writes_and_deletions_over_stored_rows_in_key_order() {
        let stored = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
            (b"d".to_vec(), b"4".to_vec()),
        ];
        let (b, c, d) = (b"b".to_vec(), b"c".to_vec(), b"d".to_vec());
        let (gone, three, new_d) = (None, written(b"3"), written(b"D"));
        let mine = vec![(&b, &gone), (&c, &three), (&d, &new_d)];
        let merged = merge(stored.clone().into_iter(), mine.clone(), 10);
        let keys: Vec<_> = merged
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(keys, [(&b"a"[..], &b"1"[..]), (b"c", b"3"), (b"d", b"D")]);
        assert_eq!(merge(stored.into_iter(), mine, 2).len(), 2);
    }

    #[test]
    fn a_prefix_of_ff_bytes_has_no_end() {
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
