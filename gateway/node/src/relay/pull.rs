//! The child's side of pull mode (前置机 style): a node behind a firewall that cannot be called
//! polls its parent for the envelopes addressed to it (`GET /federation/v1/events`), opens
//! each exactly as if it had been pushed, and returns the signed receipt (or its refusal) with
//! `POST /federation/v1/receipts`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::RelayConfig;
use crate::interchange::{Node, PullRefusal, Refusal};

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    envelopes: Vec<Collected<'a>>,
}

#[derive(Deserialize)]
struct Collected<'a> {
    cursor: i64,
    #[serde(borrow)]
    envelope: &'a RawValue,
}

/// Collects from the parent until the task is stopped.
pub(super) async fn collect_from_parent(node: Node, config: RelayConfig) {
    let Some(parent) = node.identity.registry.read().ok().and_then(|r| r.member(node.member_id())?.parent.clone())
    else {
        tracing::warn!("pull_from_parent is set but this node has no parent");
        return;
    };
    let idle = Duration::from_millis(config.pull_interval_ms.max(1));
    let mut after = 0;
    loop {
        match collect_once(&node, &parent, after).await {
            Ok(Some(cursor)) => after = cursor,
            Ok(None) => tokio::time::sleep(idle).await,
            Err(e) => {
                tracing::warn!(%parent, error = %format!("{e:#}"), "collecting envelopes from the parent failed; will retry");
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// One poll: every envelope of one page opened and answered. Returns the last cursor, or `None`
/// when nothing was waiting.
async fn collect_once(node: &Node, parent: &str, after: i64) -> anyhow::Result<Option<i64>> {
    let url = node.endpoint_of(parent).ok_or_else(|| anyhow::anyhow!("{parent} has no federation endpoint"))?;
    let base = url.trim_end_matches('/');
    let resp = node.identity.client.get(format!("{base}/federation/v1/events?after={after}")).send().await?;
    anyhow::ensure!(resp.status().is_success(), "{parent} answered {}", resp.status());
    let text = resp.text().await?;
    let page: Page<'_> = serde_json::from_str(&text)?;
    let mut last = None;
    for c in page.envelopes {
        let body = bytes::Bytes::copy_from_slice(c.envelope.get().as_bytes());
        let answer = match node.receive(parent, body, time::OffsetDateTime::now_utc()).await {
            Ok(receipt) => receipt,
            Err(refused) => {
                // The parent learns what a push would have told it, and dead-letters or splits.
                let digest = serde_json::from_str::<EnvelopeOnly>(c.envelope.get())
                    .map(|e| e.envelope.digest().to_hex())
                    .unwrap_or_default();
                serde_json::to_string(&PullRefusal {
                    refused: Refusal {
                        envelope_digest: digest,
                        status: refused.kind.status(),
                        error: serde_json::to_value(&refused.body)?,
                    },
                })?
            }
        };
        let resp = node
            .identity
            .client
            .post(format!("{base}/federation/v1/receipts"))
            .header("content-type", "application/json")
            .body(answer)
            .send()
            .await?;
        // 404: the parent gave up waiting and will send the records again in a new envelope.
        anyhow::ensure!(
            resp.status().is_success() || resp.status() == reqwest::StatusCode::NOT_FOUND,
            "{parent} refused the receipt: {}",
            resp.status()
        );
        last = Some(c.cursor);
    }
    Ok(last)
}

#[derive(Deserialize)]
struct EnvelopeOnly {
    envelope: gateway_core::jws::Jws,
    #[serde(rename = "items")]
    _items: serde::de::IgnoredAny,
}
