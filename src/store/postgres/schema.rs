//! The database schema: the versioned migrations (`migrations/NNNN.sql`, applied in order by
//! [`migrate`], each recorded in `rxgate.schema_version`), the check a gateway makes of the
//! version before it serves, and the statements a transaction runs on each table.
//!
//! Roles: the migrations run as a role of their own, which owns the schema and its tables; the
//! gateway's role (the URL's user) is granted only reading and writing rows, never DDL.

use tokio_postgres::{Client, error::SqlState};

use super::{Error, database_error};
use crate::store::{Column, ColumnType, Table};

/// The migrations, in order: version N is the N-th.
const MIGRATIONS: [&str; 4] = [
    include_str!("migrations/0001.sql"),
    include_str!("migrations/0002.sql"),
    include_str!("migrations/0003.sql"),
    include_str!("migrations/0004.sql"),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The table that holds each table's rows: named as in a dump (`dump::name`).
pub(super) fn table_name(table: Table) -> &'static str {
    crate::store::dump::name(table)
}

/// The statements of one table.
pub(super) struct TableSql {
    pub(super) columns: &'static [Column],
    pub(super) get: String,
    /// `[$1, $2)`, at most `$3` rows, in key order.
    pub(super) scan: String,
    /// From `$1` on, at most `$2` rows.
    pub(super) scan_open: String,
    /// Keys `$1`, values `$2`, then one array per declared column.
    pub(super) upsert: String,
    /// Keys `$1`.
    pub(super) delete: String,
}

/// Every table's statements.
pub(super) struct Statements(Vec<(Table, TableSql)>);

impl Statements {
    /// The statements over the tables as `columns` declares them.
    pub(super) fn new(columns: fn(Table) -> &'static [Column]) -> Self {
        Statements(
            Table::ALL
                .into_iter()
                .map(|t| (t, TableSql::new(t, columns(t))))
                .collect(),
        )
    }

    pub(super) fn of(&self, table: Table) -> &TableSql {
        &self
            .0
            .iter()
            .find(|(t, _)| *t == table)
            .expect("every table has statements")
            .1
    }
}

impl TableSql {
    fn new(table: Table, columns: &'static [Column]) -> Self {
        let name = table_name(table);
        let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
        let arrays: String = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!(", ${}::{}[]", i + 3, array_type(c.kind)))
            .collect();
        let selected: String = columns
            .iter()
            .map(|c| match c.kind {
                ColumnType::Date => format!(", {}::date", c.name),
                _ => format!(", {}", c.name),
            })
            .collect();
        let listed: String = names.iter().map(|n| format!(", {n}")).collect();
        let updated: String = names
            .iter()
            .map(|n| format!(", {n} = excluded.{n}"))
            .collect();
        TableSql {
            columns,
            get: format!("SELECT v FROM rxgate.{name} WHERE k = $1"),
            scan: format!(
                "SELECT k, v FROM rxgate.{name} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
            ),
            scan_open: format!("SELECT k, v FROM rxgate.{name} WHERE k >= $1 ORDER BY k LIMIT $2"),
            // An append-only table's rows are inserted, never replaced: a key written again
            // (an audit link whose number was given twice) is refused as a unique violation.
            upsert: format!(
                "INSERT INTO rxgate.{name} (k, v{listed}) SELECT k, v{selected} \
                 FROM unnest($1::bytea[], $2::bytea[]{arrays}) AS u(k, v{listed}){}",
                if table.append_only() {
                    String::new()
                } else {
                    format!(" ON CONFLICT (k) DO UPDATE SET v = excluded.v{updated}")
                }
            ),
            delete: format!("DELETE FROM rxgate.{name} WHERE k = ANY($1::bytea[])"),
        }
    }
}

/// How a column's values travel in a batched write (dates as text, cast in the statement).
fn array_type(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Text | ColumnType::Date => "text",
        ColumnType::Integer => "bigint",
        ColumnType::Bytes => "bytea",
    }
}

/// What [`migrate`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The version the database was at (0: no schema yet).
    pub from: i32,
    /// The version it is at now.
    pub to: i32,
}

/// Applies the migrations the database lacks, in one transaction (two migrating at once wait
/// for each other), then grants `app_role` the use of the rows. Refuses a database whose schema
/// is newer than this binary's.
pub(super) async fn migrate(client: &mut Client, app_role: &str) -> Result<Migrated, Error> {
    let tx = client.transaction().await.map_err(|e| database_error(&e))?;
    let bootstrap = "SELECT pg_advisory_xact_lock(7283651);
        CREATE SCHEMA IF NOT EXISTS rxgate;
        CREATE TABLE IF NOT EXISTS rxgate.schema_version (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now(),
            applied_by text NOT NULL DEFAULT current_user
        );";
    tx.batch_execute(bootstrap)
        .await
        .map_err(|e| database_error(&e))?;
    let from = current_version(&tx).await?;
    refuse_newer(from)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|e| database_error(&e))?;
        tx.execute(
            "INSERT INTO rxgate.schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| database_error(&e))?;
    }
    let role = quoted(app_role);
    let grants = format!(
        "GRANT USAGE ON SCHEMA rxgate TO {role};
         GRANT SELECT ON rxgate.schema_version TO {role};
         GRANT SELECT, INSERT, DELETE ON rxgate.import_unfinished TO {role};
         GRANT USAGE, SELECT, UPDATE ON SEQUENCE rxgate.draws TO {role};
         GRANT EXECUTE ON FUNCTION rxgate.draws_past_counters() TO {role};
         GRANT UPDATE ON rxgate.turns TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role};",
        Table::ALL
            .map(|t| format!("rxgate.{}", table_name(t)))
            .join(", ")
    );
    tx.batch_execute(&grants)
        .await
        .map_err(|e| database_error(&e))?;
    tx.commit().await.map_err(|e| database_error(&e))?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

/// Refuses a database whose schema is not this binary's, saying what to do.
pub(super) async fn check(client: &Client) -> Result<(), Error> {
    let version = match client
        .query_one("SELECT max(version) FROM rxgate.schema_version", &[])
        .await
    {
        Ok(row) => row.get::<_, Option<i32>>(0).unwrap_or(0),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(database_error(&e)),
    };
    refuse_newer(version)?;
    if version < SCHEMA_VERSION {
        return Err(Error::Engine(format!(
            "the database's rxgate schema is at version {version}, this rxgate needs \
             {SCHEMA_VERSION}: run `rxgate store migrate` as the migration role"
        )));
    }
    let unfinished = client
        .query_opt(
            "SELECT began_at::text FROM rxgate.import_unfinished LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| database_error(&e))?;
    if let Some(row) = unfinished {
        let began: String = row.get(0);
        return Err(Error::Corrupt(format!(
            "an import into the database begun at {began} did not finish: it holds part of a \
             dump; drop and create the database, migrate it and import again"
        )));
    }
    Ok(())
}

/// Marks the database as being loaded by an import (`unfinished`), or as whole again; the
/// latter first moves the sequence of unique values past every counter the import loaded (the
/// import raised them past the numbers its tables hold), while no gateway may yet open the
/// database, so none is drawing.
pub(super) async fn mark_import(client: &Client, unfinished: bool) -> Result<(), Error> {
    let sql = if unfinished {
        "INSERT INTO rxgate.import_unfinished DEFAULT VALUES"
    } else {
        "SELECT rxgate.draws_past_counters(); DELETE FROM rxgate.import_unfinished"
    };
    client
        .batch_execute(sql)
        .await
        .map_err(|e| database_error(&e))
}

async fn current_version(client: &tokio_postgres::Transaction<'_>) -> Result<i32, Error> {
    let row = client
        .query_one("SELECT max(version) FROM rxgate.schema_version", &[])
        .await
        .map_err(|e| database_error(&e))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0))
}

fn refuse_newer(version: i32) -> Result<(), Error> {
    if version > SCHEMA_VERSION {
        return Err(Error::Engine(format!(
            "the database's rxgate schema is at version {version}, newer than this rxgate \
             knows ({SCHEMA_VERSION}): run a newer rxgate"
        )));
    }
    Ok(())
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
