//! The institutions of a run — measured clinics, history clinics, pharmacies — each with its own
//! minted certificate and its own HTTP/2 connections, as real clinics and pharmacies would open.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::Context;
use rxgate::domain::ids::{Institution, InstitutionKind};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::pki::{self, Minter};

/// One institution and its connections, used in turn.
pub struct Member {
    pub code: String,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Member {
    /// The next of its connections (round robin).
    pub fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

/// Which institutions a run needs.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clinics: usize,
    pub history_clinics: usize,
    pub pharmacies: usize,
    pub connections: usize,
}

pub struct Fleet {
    /// Send the measured prescriptions.
    pub clinics: Vec<Member>,
    /// Prescribed the patients' histories; never measured.
    pub history_clinics: Vec<Member>,
    pub pharmacies: Vec<Member>,
}

/// Code blocks (the digit after the kind) that keep the groups apart.
const CLINIC_BLOCK: u32 = 9;
const HISTORY_CLINIC_BLOCK: u32 = 8;
const PHARMACY_BLOCK: u32 = 9;

impl Fleet {
    /// Mints a certificate per institution and opens its connections to `addr` (several
    /// gateways: comma-separated).
    pub async fn connect(
        minter: &Minter,
        shape: Shape,
        addr: &str,
        timeout: Duration,
    ) -> anyhow::Result<Fleet> {
        let group = |kind, block, n| {
            (0..n)
                .map(|i| pki::institution(kind, block, i))
                .collect::<Vec<_>>()
        };
        Ok(Fleet {
            clinics: connect_all(
                minter,
                group(InstitutionKind::Clinic, CLINIC_BLOCK, shape.clinics),
                shape.connections,
                addr,
                timeout,
            )
            .await?,
            history_clinics: connect_all(
                minter,
                group(
                    InstitutionKind::Clinic,
                    HISTORY_CLINIC_BLOCK,
                    shape.history_clinics,
                ),
                shape.connections,
                addr,
                timeout,
            )
            .await?,
            pharmacies: connect_all(
                minter,
                group(InstitutionKind::Pharmacy, PHARMACY_BLOCK, shape.pharmacies),
                shape.connections,
                addr,
                timeout,
            )
            .await?,
        })
    }

    pub fn connection_count(&self) -> usize {
        [&self.clinics, &self.history_clinics, &self.pharmacies]
            .iter()
            .flat_map(|g| g.iter())
            .map(|m| m.channels.len())
            .sum()
    }
}

async fn connect_all(
    minter: &Minter,
    institutions: Vec<Institution>,
    connections: usize,
    addr: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Member>> {
    // Several gateways of one fleet: the connections go to each in turn, as a load balancer
    // spreads them.
    let gateways: Vec<&str> = addr.split(',').collect();
    let mut handshakes = JoinSet::new();
    for (i, institution) in institutions.iter().enumerate() {
        let credentials = minter.mint(institution)?;
        for c in 0..connections {
            let credentials = credentials.clone();
            let addr = gateways[(i * connections + c) % gateways.len()].to_owned();
            handshakes.spawn(async move { (i, credentials.connect(&addr, timeout).await) });
        }
    }
    let mut channels = vec![Vec::with_capacity(connections); institutions.len()];
    while let Some(joined) = handshakes.join_next().await {
        let (i, channel) = joined.context("a connection task")?;
        channels[i].push(channel?);
    }
    Ok(institutions
        .into_iter()
        .zip(channels)
        .map(|(institution, channels)| Member {
            code: institution.code.to_string(),
            channels,
            next: AtomicUsize::new(0),
        })
        .collect())
}
