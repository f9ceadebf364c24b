//! A full disk, through the real `rxgate serve` on a 32 MiB tmpfs: below the free-space
//! low-water mark new registrations are refused with RESOURCE_EXHAUSTED and health says
//! NOT_SERVING while status reads answer, below half of it reads are refused too; with room
//! again writes resume without a restart; with
//! the mark off and the disk filled to the brim the store meets ENOSPC and the process exits 1
//! with one clear line; restarted with room, every acknowledged registration is there.
//!
//! The tmpfs is mounted in a mount namespace of its own (`unshare -m`, which needs root, as CI
//! is), held by a sleeping process: the gateways run inside it (`nsenter -m`), the test fills it
//! with ballast through that process's root (`/proc/PID/root`). Killing the holder ends the
//! namespace and its mount: none is left behind.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use prost::Message;
use rxgate::{
    cli::demo::demo_prescription,
    domain::time::JapanDate,
    wire::proto::v1::{self as pb, prescription_service_client::PrescriptionServiceClient},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    anywhere::may_unshare,
    common::{dev_pki, metrics_text, patient, process::Rxgate, signed, signer},
    lifecycle::{exited, serve_configured, until_health},
};

const MIB: u64 = 1024 * 1024;
/// The low-water mark of the test, on a 32 MiB disk (its floor is half of it).
const MARK_MIB: u64 = 8;
/// Anything that should happen promptly on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(60);

/// A 32 MiB tmpfs at a folder, seen only inside a mount namespace held by a process of its own.
struct Disk {
    holder: Child,
    /// The folder as the test reaches it: through the holder's root.
    inside: PathBuf,
}

impl Disk {
    fn mount(at: &Path) -> Disk {
        let mut holder = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                r#"mount -t tmpfs -o size=32m tmpfs "$1" && echo mounted && exec sleep 3600"#,
                "sh",
            ])
            .arg(at)
            .stdout(Stdio::piped())
            .spawn()
            .expect("running unshare");
        let mut said = String::new();
        let stdout = holder.stdout.take().expect("piped");
        BufReader::new(stdout).read_line(&mut said).unwrap();
        assert_eq!(said, "mounted\n", "the tmpfs was not mounted");
        let inside = PathBuf::from(format!("/proc/{}/root", holder.id())).join(
            at.strip_prefix("/")
                .expect("an absolute path of the mount point"),
        );
        Disk { holder, inside }
    }

    /// `nsenter` into the namespace: `rxgate` runs under it (nsenter executes it in place).
    fn nsenter(&self) -> Vec<OsString> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(OsString::from)
            .to_vec()
    }

    fn free(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.inside).unwrap();
        stat.f_bavail * stat.f_frsize
    }

    /// Writes the ballast file `name` so that about `left` bytes stay free.
    fn fill_to(&self, name: &str, left: u64) {
        let size = self
            .free()
            .checked_sub(left)
            .expect("less free already than the ballast should leave");
        std::fs::write(self.inside.join(name), vec![0xA5; size as usize]).unwrap();
    }

    /// Writes the ballast file `name` until the disk is full.
    fn fill(&self, name: &str) {
        let mut file = std::fs::File::create(self.inside.join(name)).unwrap();
        let chunk = vec![0xA5; 64 * 1024];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return,
                Err(e) => panic!("ballast: {e}"),
            }
        }
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.inside.join(name)).unwrap();
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A clinic that registers demo prescriptions, one new number and patient after the other.
struct Clinic {
    client: PrescriptionServiceClient<Channel>,
    channel: Channel,
    today: JapanDate,
    next: u32,
}

impl Clinic {
    async fn of(server: &Rxgate) -> Clinic {
        let channel = dev_pki()
            .client("clinic")
            .connect(&server.addr)
            .await
            .unwrap();
        Clinic {
            client: PrescriptionServiceClient::new(channel.clone()),
            channel,
            today: JapanDate::of(SystemTime::now()),
            next: 0,
        }
    }

    /// Registers the next prescription: its id, or the refusal.
    async fn register(&mut self) -> Result<String, tonic::Status> {
        self.next += 1;
        let number = format!("DISK-{}", self.next);
        let rx = demo_prescription(&number, patient(self.next), self.today);
        let request = pb::RegisterPrescriptionRequest {
            prescription: Some(signed(
                &signer("doctor"),
                rx.encode_to_vec(),
                SystemTime::now(),
            )),
            ..Default::default()
        };
        let answer = self.client.register_prescription(request).await;
        answer.map(|r| r.into_inner().prescription_id)
    }

    async fn status(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = pb::GetPrescriptionStatusRequest {
            prescription_id: id.to_owned(),
        };
        self.client.get_prescription_status(request).await.map(drop)
    }
}

/// Whether the gateway's metrics say new data is refused for want of room.
async fn low_water(server: &Rxgate) -> bool {
    let text = metrics_text(server.metrics).await;
    assert!(text.contains("rxgate_disk_free_bytes"), "{text}");
    text.contains("\nrxgate_disk_low_water 1\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_data_keeps_reads_recovers_and_exits_on_enospc() {
    if !may_unshare() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    let disk = Disk::mount(&dir.path().join("store"));
    let marked = format!("store_low_water_mib = {MARK_MIB}\nstore_low_water_percent = 0");
    let serve = |settings: &str| serve_configured(dir.path(), settings).inside(&disk.nsenter());

    let server = serve(&marked).start().await;
    let mut clinic = Clinic::of(&server).await;
    let mut acked = Vec::new();
    for _ in 0..5 {
        acked.push(clinic.register().await.unwrap());
    }

    // Below the mark, above its floor: new data refused, reads answered.
    disk.fill_to("ballast", (MARK_MIB - 2) * MIB);
    until_health(&clinic.channel, ServingStatus::NotServing).await;
    let refused = clinic.register().await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("the data disk is nearly full: ")
            && refused
                .message()
                .ends_with(&format!("the low-water mark is {MARK_MIB} MiB")),
        "{refused:?}"
    );
    for id in &acked {
        clinic.status(id).await.unwrap();
    }
    assert!(low_water(&server).await);

    // Below the floor (half the mark): reads are refused too, before they reach the store.
    disk.fill_to("deeper", MARK_MIB / 2 * MIB - MIB);
    let deadline = Instant::now() + PROMPTLY;
    let refused = loop {
        match clinic.status(&acked[0]).await {
            Ok(()) => assert!(Instant::now() < deadline, "reads never refused"),
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // Room again: writes resume by themselves.
    disk.remove("deeper");
    disk.remove("ballast");
    until_health(&clinic.channel, ServingStatus::Serving).await;
    acked.push(clinic.register().await.unwrap());
    assert!(!low_water(&server).await);
    let log = server.output();
    assert!(log.contains("below its low-water mark"), "{log}");
    assert!(log.contains("the data disk has room again"), "{log}");
    server.signal("TERM");
    let (status, _, server) = exited(server, PROMPTLY).await;
    assert!(status.is_some_and(|s| s.success()), "{}", server.output());

    // No mark, and the disk full to the brim: the store meets ENOSPC, the process exits.
    let server = serve("store_low_water_mib = 0\nstore_low_water_percent = 0")
        .start()
        .await;
    let mut clinic = Clinic {
        next: clinic.next,
        ..Clinic::of(&server).await
    };
    disk.fill("brim");
    let deadline = Instant::now() + PROMPTLY;
    while let Ok(id) = clinic.register().await {
        acked.push(id);
        assert!(Instant::now() < deadline, "never refused on a full disk");
    }
    let (status, _, server) = exited(server, PROMPTLY).await;
    let log = server.output();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("the store failed: no space left on device in ")
            && log.contains("free space and restart — every acknowledged write is durable"),
        "{log}"
    );

    // Restarted with room: every acknowledged registration is there.
    disk.remove("brim");
    let server = serve(&marked).start().await;
    let mut clinic = Clinic::of(&server).await;
    for id in &acked {
        let found = clinic.status(id).await;
        assert!(found.is_ok(), "{id} acknowledged, then lost: {found:?}");
    }
}
