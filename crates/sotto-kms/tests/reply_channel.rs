//! Reply channels over real mutual-TLS gRPC on loopback, the KMS served in
//! process: an agent opens one channel and recovers many secrets under it;
//! after the KMS restarts (and forgets its channels) the agent's next
//! recovery is refused as ABORTED, and the agent opens a new channel and
//! gets its secret without the caller seeing an error. The audit log
//! records each step.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rand::rngs::OsRng;
use sotto_kms::agent::{Agent, EscrowOptions, SecretId};
use sotto_kms::audit::AuditEvent;
use sotto_kms::client::KmsClient;
use sotto_kms::escrow::SecretKind;
use sotto_kms::lifecycle;
use sotto_kms::objects::ObjectLocation;
use sotto_kms::password::OperatorPassword;
use sotto_kms::server::{serve, ServeConfig};
use sotto_net::ca::ConsortiumCa;
use sotto_node::NodeHome;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PASSWORD: &[u8] = b"reply channel test password";

fn home(dir: &Path, ca: &ConsortiumCa, name: &str) -> NodeHome {
    let now = time::OffsetDateTime::now_utc();
    let home = NodeHome::init(&dir.join(name), name.parse().unwrap(), 2, &mut OsRng).unwrap();
    ca.enroll(&home, now, now + time::Duration::days(1))
        .unwrap();
    home
}

struct RunningKms {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_kms(dir: &Path, address: SocketAddr) -> RunningKms {
    let listener = TcpListener::bind(address).await.unwrap();
    let config = ServeConfig {
        home: NodeHome::open(&dir.join("kms")).unwrap(),
        password: OperatorPassword::new(PASSWORD.to_vec()).unwrap(),
        recover_rate: 1000,
        recover_burst: 1000,
        reply_channel_ttl: Duration::from_secs(600),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    RunningKms { stop, task }
}

async fn audit_events(dir: &Path, address: SocketAddr) -> Vec<AuditEvent> {
    let kms_home = NodeHome::open(&dir.join("kms")).unwrap();
    let mut operator = KmsClient::connect(&kms_home, "kms", &address.to_string())
        .await
        .unwrap();
    operator
        .audit()
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.event)
        .collect()
}

fn count(events: &[AuditEvent], what: fn(&AuditEvent) -> bool) -> usize {
    events.iter().filter(|e| what(e)).count()
}

#[tokio::test]
async fn the_agent_reuses_its_channel_and_replaces_one_the_kms_forgot() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let ca =
        ConsortiumCa::init(&dir.join("ca"), "test", time::OffsetDateTime::now_utc(), 30).unwrap();
    let kms_home = home(dir, &ca, "kms");
    let bank = home(dir, &ca, "bank-a");
    let backup = ObjectLocation::create(dir.join("third").to_str().unwrap()).unwrap();
    let password = OperatorPassword::new(PASSWORD.to_vec()).unwrap();
    lifecycle::init(kms_home.dir(), &password, &backup, 1, &mut OsRng)
        .await
        .unwrap();

    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let kms = start_kms(dir, address).await;
    let mut operator = KmsClient::connect(&kms_home, "kms", &address.to_string())
        .await
        .unwrap();
    operator.keygen("bank-a", "escrow").await.unwrap();
    let store = dir.join("store");
    Agent::setup(
        &bank,
        "kms",
        &address.to_string(),
        store.to_str().unwrap(),
        None,
        false,
    )
    .await
    .unwrap();
    let agent = Agent::open(&bank).await.unwrap();
    let ids: Vec<SecretId> = (0..3).map(|i| format!("s{i}").parse().unwrap()).collect();
    for id in &ids {
        let secret = format!("secret {id}");
        agent
            .put(
                id,
                SecretKind::Other,
                secret.as_bytes(),
                &EscrowOptions::default(),
            )
            .await
            .unwrap();
    }
    for id in &ids {
        let (_, secret) = agent.recover(id, false).await.unwrap();
        assert_eq!(secret.as_slice(), format!("secret {id}").as_bytes());
    }
    let events = audit_events(dir, address).await;
    assert_eq!(
        count(&events, |e| matches!(e, AuditEvent::ChannelOpened { .. })),
        1,
        "three recoveries share one channel"
    );
    assert_eq!(
        count(&events, |e| matches!(e, AuditEvent::RecoveryGranted { .. })),
        3
    );

    kms.stop.send(()).unwrap();
    kms.task.await.unwrap();
    let kms = start_kms(dir, address).await;
    let (_, secret) = agent.recover(&ids[0], false).await.unwrap();
    assert_eq!(secret.as_slice(), b"secret s0");
    let events = audit_events(dir, address).await;
    let after_restart: Vec<&AuditEvent> = events
        .iter()
        .skip_while(|e| !matches!(e, AuditEvent::RecoveryRefused { .. }))
        .collect();
    assert!(
        matches!(after_restart.first(), Some(AuditEvent::RecoveryRefused { reason, .. }) if reason.contains("not open at the KMS")),
        "the forgotten channel is refused first: {after_restart:?}"
    );
    assert!(matches!(
        after_restart.get(1),
        Some(AuditEvent::ChannelOpened { .. })
    ));
    assert!(matches!(
        after_restart.get(2),
        Some(AuditEvent::RecoveryGranted { .. })
    ));
    kms.stop.send(()).unwrap();
    kms.task.await.unwrap();
}
