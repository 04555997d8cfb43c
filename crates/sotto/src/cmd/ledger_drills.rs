//! Fault drills of `sotto demo ledger`, through the running processes with
//! the client library: transactions whose endorsements are too few, belong
//! to another packet, were altered on the way, or whose TEE signature is
//! forged, two transactions that read the same version, and a packet of an
//! enclave revoked between execution and ordering. Each is ordered and must
//! get its one code at both business nodes; none may change the state.
//! Calls from roles that may not make them are refused by the compute and
//! plaintext-mode business nodes.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use sotto_crypto::ids::TxId;
use sotto_ledger::block::Block;
use sotto_ledger::online::client::{CallSpec, Endorsed, LedgerClient};
use sotto_ledger::ValidationCode;
use sotto_node::NodeHome;

/// How long a drill waits for a business node's code.
const PATIENCE: Duration = Duration::from_secs(20);

/// A client of `bank` using the compute nodes `compute` (NAME@HOST:PORT).
pub fn client(dir: &Path, bank: &str, compute: &[String]) -> Result<LedgerClient> {
    let block0 = std::fs::read(dir.join("block0.bin"))?;
    let block0 = <Block as prost::Message>::decode(block0.as_slice())?;
    Ok(LedgerClient::new(
        NodeHome::open(&dir.join(bank))?,
        &block0,
        super::ledger::compute_nodes(compute)?,
    )?)
}

/// A loan nobody else records, for both business nodes.
fn drill_loan(n: u32) -> CallSpec {
    CallSpec {
        contract: "credit".into(),
        function: "loan".into(),
        args: format!(
            "{{\"customer\":\"customer-drill-{n}\",\"loan\":\"loan-drill-{n}\",\"amount\":1000}}"
        )
        .into_bytes(),
        targets: vec!["b1".into(), "b2".into()],
    }
}

/// Submits `tx` and requires `expected` at both business nodes.
async fn ordered_as(
    client: &LedgerClient,
    what: &str,
    tx_id: &TxId,
    tx: Vec<u8>,
    expected: ValidationCode,
) -> Result<()> {
    let from = client.status("b1").await?.height + 1;
    client.broadcast(vec![tx]).await?;
    for node in ["b1", "b2"] {
        let (block, code) = client.code_of(node, tx_id, from, PATIENCE).await?;
        ensure!(
            code == expected,
            "{what}: {node} gave {code} in block {block}, not {expected}"
        );
    }
    println!("  {what}: {expected} at b1 and b2");
    Ok(())
}

/// Endorsement faults and a forged TEE signature, each ordered.
pub async fn endorsement_faults(client: &mut LedgerClient) -> Result<()> {
    let mut prepared = Vec::new();
    for n in 1..=5 {
        prepared.push(client.prepare(&drill_loan(n)).await?);
    }
    let [mut too_few, mut foreign, mut renamed, mut fake, relayed] =
        <[Endorsed; 5]>::try_from(prepared).map_err(|_| anyhow::anyhow!("five prepared calls"))?;
    foreign.endorsements = too_few.endorsements.clone();
    too_few.endorsements.truncate(1);
    for endorsement in &mut renamed.endorsements {
        endorsement.targets = vec!["b1".into()];
    }
    let policy = ValidationCode::EndorsementPolicyFailure;
    for (what, endorsed) in [
        (
            "a transaction with one endorsement where the policy asks two of three",
            &too_few,
        ),
        (
            "a transaction carrying the endorsements of another packet",
            &foreign,
        ),
        (
            "endorsements whose named business nodes were changed",
            &renamed,
        ),
    ] {
        let tx = client.transaction(endorsed);
        ordered_as(client, what, &endorsed.tx_id, tx, policy).await?;
    }
    if let Some(byte) = fake.tee_signature.get_mut(7) {
        *byte ^= 1;
    }
    match client
        .endorse("credit", &fake.packet, &fake.tee_signature)
        .await
    {
        Ok(_) => bail!("an endorser endorsed a forged TEE signature"),
        Err(e) => ensure!(
            e.to_string().contains("TEE signature"),
            "a forged TEE signature was refused for another reason: {e}"
        ),
    }
    let tx = client.transaction(&fake);
    let what = "a forged TEE signature (refused by the endorsers, ordered anyway)";
    ordered_as(
        client,
        what,
        &fake.tx_id,
        tx,
        ValidationCode::BadTeeSignature,
    )
    .await?;
    let tx = stripped(&client.transaction(&relayed))?;
    let what = "a transaction a relay stripped of an endorsement after the client signed it";
    ordered_as(
        client,
        what,
        &relayed.tx_id,
        tx,
        ValidationCode::BadCreatorSignature,
    )
    .await?;
    let answer = client
        .query(&CallSpec {
            function: "exposure".into(),
            args: b"{\"customer\":\"customer-drill-1\"}".to_vec(),
            ..drill_loan(0)
        })
        .await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    ensure!(
        answer["total"].as_u64() == Some(0),
        "a refused transaction changed the state: {answer}"
    );
    Ok(())
}

/// The transaction with its last endorsement removed, as a relay would,
/// without the client's signature being made again.
fn stripped(tx: &[u8]) -> Result<Vec<u8>> {
    use prost::Message;
    use sotto_ledger::tx::{Body, Transaction};
    let mut decoded = Transaction::decode(tx)?;
    let Some(Body::Invoke(invoke)) = decoded.body.as_mut() else {
        bail!("not an invoke");
    };
    invoke.endorsements.pop();
    Ok(decoded.encode_to_vec())
}

/// Two loans of one customer prepared on the same state: the first
/// ordered is valid, the second read versions the first changed.
pub async fn read_conflict(client: &mut LedgerClient) -> Result<()> {
    let mut first = drill_loan(20);
    let mut second = drill_loan(21);
    for (call, loan) in [
        (&mut first, "loan-drill-20"),
        (&mut second, "loan-drill-21"),
    ] {
        call.args =
            format!("{{\"customer\":\"customer-drill-20\",\"loan\":\"{loan}\",\"amount\":500}}")
                .into_bytes();
    }
    let first = client.prepare(&first).await?;
    let second = client.prepare(&second).await?;
    let from = client.status("b1").await?.height + 1;
    client
        .broadcast(vec![
            client.transaction(&first),
            client.transaction(&second),
        ])
        .await?;
    for node in ["b1", "b2"] {
        let (_, a) = client.code_of(node, &first.tx_id, from, PATIENCE).await?;
        let (_, b) = client.code_of(node, &second.tx_id, from, PATIENCE).await?;
        ensure!(
            (a, b) == (ValidationCode::Valid, ValidationCode::MvccReadConflict),
            "two loans on the same state: {node} gave {a} and {b}, not VALID and MVCC_READ_CONFLICT"
        );
    }
    println!("  two loans prepared on the same state, ordered together: VALID (0) then MVCC_READ_CONFLICT (11) at b1 and b2");
    Ok(())
}

/// `result` must be PERMISSION_DENIED with `reason` in its message.
fn denied<T>(what: &str, result: Result<T, tonic::Status>, reason: &str) -> Result<()> {
    match result {
        Ok(_) => bail!("{what} was answered"),
        Err(status) => ensure!(
            status.code() == tonic::Code::PermissionDenied && status.message().contains(reason),
            "{what} was refused for another reason: {status:?}"
        ),
    }
    Ok(())
}

/// A channel to `peer` at `address` under the certificate of `home`.
fn channel_as(
    dir: &Path,
    home: &str,
    peer: &str,
    address: &str,
) -> Result<tonic::transport::Channel> {
    let tls = sotto_net::tls::TlsMaterial::load(&NodeHome::open(&dir.join(home))?)?;
    Ok(sotto_ledger::online::channel(&tls, peer, address)?)
}

/// Calls by roles that may not make them: a business node asking a compute
/// enclave for its envelope key or to execute, a client loading from the
/// plaintext-mode node, and a compute member loading from it without a
/// load channel.
pub async fn caller_checks(dir: &Path, compute: &[String]) -> Result<()> {
    use sotto_wire::ledger::business_client::BusinessClient;
    use sotto_wire::ledger::compute_client::ComputeClient;
    use sotto_wire::ledger::{EnvelopeKeyRequest, ExecuteRequest, LoadRequest};
    let (c1, c1_address) = compute
        .first()
        .and_then(|c| c.split_once('@'))
        .context("no compute node")?;
    let block0 =
        <Block as prost::Message>::decode(std::fs::read(dir.join("block0.bin"))?.as_slice())?;
    let (config, _) = block0.open_genesis("block 0")?;
    let b2_address = config
        .business_node("b2")
        .and_then(|b| b.member.address.clone())
        .context("b2 has no address in block 0")?;
    let mut as_b1 = ComputeClient::new(channel_as(dir, "b1", c1, c1_address)?);
    let not_for_b1 = "b1 is not a node this ledger lets make this call";
    denied(
        "a business node asking for the envelope key",
        as_b1.envelope_key(EnvelopeKeyRequest {}).await,
        not_for_b1,
    )?;
    denied(
        "a business node asking an enclave to execute",
        as_b1
            .execute(ExecuteRequest {
                request: Vec::new(),
            })
            .await,
        not_for_b1,
    )?;
    let load = LoadRequest {
        keys: vec![vec![0; 32]],
        ..LoadRequest::default()
    };
    denied(
        "a client loading from b2",
        BusinessClient::new(channel_as(dir, "bank-a", "b2", &b2_address)?)
            .load(load.clone())
            .await,
        "bank-a is not a node this ledger lets make this call",
    )?;
    denied(
        "a compute member loading from b2 without a load channel",
        BusinessClient::new(channel_as(dir, c1, "b2", &b2_address)?)
            .load(load)
            .await,
        "a load must open a load channel",
    )?;
    println!("  compute c1 refused a business node's envelope-key and execute calls; b2 refused a client's load and a member's load without a load channel");
    Ok(())
}

/// Runs a call through `compute` only and endorses it (before a
/// revocation), to be submitted after it.
pub async fn prepare_loan(client: &mut LedgerClient, n: u32) -> Result<Endorsed> {
    Ok(client.prepare(&drill_loan(n)).await?)
}

/// Submits a packet prepared by an enclave revoked since.
pub async fn submit_after_revocation(client: &LedgerClient, endorsed: &Endorsed) -> Result<()> {
    let tx = client.transaction(endorsed);
    let what = "a packet of c2, endorsed before c2's revocation and ordered after it";
    ordered_as(
        client,
        what,
        &endorsed.tx_id,
        tx,
        ValidationCode::EnclaveNotMember,
    )
    .await
}
