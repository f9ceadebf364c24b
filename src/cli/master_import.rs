//! `rxgate master import FILE...`: streams official drug-master files (and contraindication
//! tables) to a running gateway's AdminService.ImportMaster in chunks under the message-size
//! limit, with a progress bar on standard error, and prints what the gateway did.

use std::{
    io::Write,
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

/// Reads the files (a `.gz` is decompressed here) and names their kind from the official file
/// names.
pub fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(FileKind, SourceFile)>> {
    paths
        .iter()
        .map(|path| {
            let file = SourceFile::read(path)?;
            let Some(kind) = FileKind::of_name(&file.name) else {
                bail!(
                    "{}: not an official file name (y_ALLYYYYMMDD.csv, y_YYYYMMDD.csv, \
                     mhlw_yakka_list_*.csv, ippan_master_*.csv, contraindications*.csv)",
                    path.display()
                );
            };
            Ok((kind, file))
        })
        .collect()
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

fn progress_bar(done: u64, total: u64) -> String {
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

/// Sends `paths` to the gateway at `addr` as the operator `client` and returns its summary.
pub async fn import(
    addr: &str,
    client: &ClientFiles,
    paths: &[PathBuf],
) -> anyhow::Result<pb::ImportMasterSummary> {
    let files = read_files(paths)?;
    let total: u64 = files.iter().map(|(_, f)| f.bytes.len() as u64).sum();
    let channel = client
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let sent = Arc::new(AtomicU64::new(0));
    let watched = Arc::clone(&sent);
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            eprint!("{}", progress_bar(watched.load(Ordering::Relaxed), total));
            let _ = std::io::stderr().flush();
        }
    });
    let answer = AdminServiceClient::new(channel)
        .import_master(chunks(files, Arc::clone(&sent)))
        .await;
    progress.abort();
    eprintln!("{}", progress_bar(sent.load(Ordering::Relaxed), total));
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
