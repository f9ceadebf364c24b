//! Pooled connections whose server went away while they sat idle, unnoticed: a proxy between
//! the store and the test cluster drops its side of every connection at once and answers the
//! gateway's next message by closing, as a load balancer does whose backend vanished. The
//! next transactions must not be answered UNAVAILABLE for the dead connections the pool still
//! holds: the one found dead at its BEGIN runs again on a new connection, and the other idle
//! ones are dropped with it. Skipped, saying so, when PostgreSQL is not installed, except
//! under CI.

use std::{
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rxgate::store::{Error, Store, Table};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::common::postgres::installed;
use crate::postgres::{close, open};

/// A TCP proxy to `upstream` on 127.0.0.1 whose connections can all be cut at once.
struct Proxy {
    port: u16,
    cut: watch::Sender<()>,
}

impl Proxy {
    async fn to(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = watch::channel(());
        let cutting = cut.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                tokio::spawn(forward(client, server, cutting.subscribe()));
            }
        });
        Proxy { port, cut }
    }

    /// Cuts every connection made so far, and returns once each has closed its server's side
    /// (so that nothing the client sends next reaches the server); those made afterwards are
    /// forwarded.
    async fn cut(&self) {
        self.cut.send_replace(());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.cut.receiver_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a connection not cut"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Forwards both ways until the connection ends or is cut: then the server's side is closed,
/// and the client's once it sends anything more.
async fn forward(mut client: TcpStream, mut server: TcpStream, mut cut: watch::Receiver<()>) {
    tokio::select! {
        biased;
        _ = cut.changed() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
    }
    drop(server);
    drop(cut);
    let _ = client.read(&mut [0; 1]).await;
}

/// Writes `key` in a transaction that, on its first run, waits until `barrier`'s other party
/// has begun its own.
fn together(
    store: &Arc<rxgate::store::PgStore>,
    barrier: &Arc<Barrier>,
    key: &'static [u8],
) -> impl Future<Output = Result<Result<(), Error>, Error>> {
    let (barrier, first) = (Arc::clone(barrier), AtomicBool::new(true));
    store.transact(move |tx| {
        tx.put(Table::Meta, key, b"x");
        if first.swap(false, Ordering::SeqCst) {
            barrier.wait();
        }
        Ok::<_, Error>(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_a_server_gone_cost_no_transaction_an_unavailable() {
    let Some(cluster) = installed() else { return };
    let mut config = cluster.database();
    let port = config
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let proxy = Proxy::to(port.parse().unwrap()).await;
    config.url = config
        .url
        .replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
    let store = open(&config).await.unwrap();
    let write = |store: &Arc<rxgate::store::PgStore>, key: &'static [u8]| {
        store.transact(move |tx| {
            tx.put(Table::Meta, key, b"x");
            Ok::<_, Error>(())
        })
    };
    // Two connections in the pool, idle: two transactions that were open at once.
    let both_open = Arc::new(Barrier::new(2));
    let (a, b) = tokio::join!(
        together(&store, &both_open, b"a"),
        together(&store, &both_open, b"b")
    );
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    assert_eq!(store.stats().pool.open, 2);

    proxy.cut().await;
    let answer = write(&store, b"c").await;
    assert!(matches!(answer, Ok(Ok(()))), "{answer:?}");
    // The other dead connection went with the first: only the new one is left.
    assert_eq!(store.stats().pool.open, 1);
    let answer = write(&store, b"d").await;
    assert!(matches!(answer, Ok(Ok(()))), "{answer:?}");
    close(store).await;
}
