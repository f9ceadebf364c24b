//! `rxgate master import FILE...`: streams official drug-master files (and contraindication
//! tables) to a running gateway's AdminService.ImportMaster in chunks under the message-size
//! limit, with a progress bar on standard error when it is a terminal (a line per file
//! otherwise), and prints what the gateway did.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, bail};

use crate::{
    grpc::file_kind_to_pb,
    master_files::{FileKind, SourceFile},
    tls::ClientFiles,
    wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};

/// Bytes per data message: well under the gateway's 256 KiB message limit.
const CHUNK_BYTES: usize = 128 * 1024;

/// Reads the files (a `.gz` is decompressed here) and names their kind: `kind`, or the one whose
/// official name each file name contains. Each is sent under its official name.
pub fn read_files(
    paths: &[PathBuf],
    kind: Option<FileKind>,
) -> anyhow::Result<Vec<(FileKind, SourceFile)>> {
    paths
        .iter()
        .map(|path| {
            let mut file = SourceFile::read(path)?;
            let Some(kind) = kind.or_else(|| FileKind::of_name(&file.name)) else {
                bail!("{}: {}", path.display(), unrecognised());
            };
            file.name = kind.official_name(&file.name).with_context(|| {
                format!(
                    "{}: a {} file's name carries its date ({})",
                    path.display(),
                    kind.name(),
                    kind.pattern()
                )
            })?;
            Ok((kind, file))
        })
        .collect()
}

/// What a file name must contain to be recognised, and the way out.
fn unrecognised() -> String {
    let patterns: Vec<_> = FileKind::ALL
        .iter()
        .map(|k| format!("{} ({})", k.pattern(), k.name()))
        .collect();
    format!(
        "not recognised as an official file: the name contains none of {}, in any case, as \
         .csv or .csv.gz; say --kind KIND to name the kind",
        patterns.join(", ")
    )
}

/// The import stream: per file a header, then its bytes in chunks; `sent` counts the bytes as
/// the transport takes them.
fn chunks(
    files: Vec<(FileKind, SourceFile)>,
    sent: Arc<AtomicU64>,
) -> impl tokio_stream::Stream<Item = pb::ImportMasterChunk> {
    use pb::import_master_chunk::Part;
    let messages = files.into_iter().flat_map(move |(kind, file)| {
        let header = pb::ImportMasterChunk {
            part: Some(Part::File(pb::ImportFileHeader {
                name: file.name.clone(),
                kind: file_kind_to_pb(kind) as i32,
                size: file.bytes.len() as u64,
            })),
        };
        let sent = Arc::clone(&sent);
        let data: Vec<_> = file.bytes.chunks(CHUNK_BYTES).map(|c| c.to_vec()).collect();
        std::iter::once(header).chain(data.into_iter().map(move |bytes| {
            sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            pb::ImportMasterChunk {
                part: Some(Part::Data(bytes)),
            }
        }))
    });
    tokio_stream::iter(messages)
}

/// The bar drawn over `done` of `total` bytes (also `rxgate store import`'s).
pub(super) fn progress_bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    format!(
        "\r[{}{}] {:>5.1} / {:.1} MB",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        done as f64 / 1e6,
        total as f64 / 1e6
    )
}

/// Redraws the progress bar on standard error until aborted.
pub(super) fn draw_progress(sent: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            eprint!("{}", progress_bar(sent.load(Ordering::Relaxed), total));
            let _ = std::io::stderr().flush();
        }
    })
}

/// Sends `paths` (of `kind`, or of the kind their names say) to the gateway at `addr` as the
/// operator `client` and returns its summary. A progress bar is drawn only on a terminal;
/// elsewhere (a log, a pipe) each file gets one plain line.
pub async fn import(
    addr: &str,
    client: &ClientFiles,
    paths: &[PathBuf],
    kind: Option<FileKind>,
) -> anyhow::Result<pb::ImportMasterSummary> {
    let files = read_files(paths, kind)?;
    let total: u64 = files.iter().map(|(_, f)| f.bytes.len() as u64).sum();
    let channel = client
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let terminal = std::io::stderr().is_terminal();
    if !terminal {
        for (kind, file) in &files {
            let mb = file.bytes.len() as f64 / 1e6;
            eprintln!("sending {} ({}, {mb:.1} MB)", file.name, kind.name());
        }
    }
    let sent = Arc::new(AtomicU64::new(0));
    let progress = terminal.then(|| draw_progress(Arc::clone(&sent), total));
    let answer = AdminServiceClient::new(channel)
        .import_master(chunks(files, Arc::clone(&sent)))
        .await;
    if let Some(progress) = progress {
        progress.abort();
        eprintln!("{}", progress_bar(sent.load(Ordering::Relaxed), total));
    }
    let summary =
        answer.map_err(|s| anyhow::anyhow!("import refused: {:?}: {}", s.code(), s.message()))?;
    Ok(summary.into_inner())
}

/// The summary as a table.
pub fn render(summary: &pb::ImportMasterSummary) -> String {
    let mut out = format!(
        "{:<34} {:>8} {:>7} {:>7} {:>9} {:>7} {:>8}\n",
        "file", "rows", "added", "changed", "abolished", "deleted", "restored"
    );
    for f in &summary.files {
        if f.already_imported {
            out.push_str(&format!(
                "{:<34} already imported: nothing applied\n",
                f.name
            ));
        } else {
            out.push_str(&format!(
                "{:<34} {:>8} {:>7} {:>7} {:>9} {:>7} {:>8}\n",
                f.name, f.rows, f.added, f.changed, f.abolished, f.deleted, f.restored
            ));
        }
    }
    out.push_str(&format!(
        "in force: {} master records, {} current products, {} contraindication rules \
         (imported files: {})\n",
        summary.master_records,
        summary.current_products,
        summary.contraindication_rules,
        summary.version
    ));
    out
}
