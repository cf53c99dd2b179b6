//! The center: owns no state of its own. It keeps an in-memory mirror of the directory
//! bucket, answers the `mrc-center` micro service from it, writes the bucket on the
//! gateways' behalf, publishes presence, and evicts gateways that stop heartbeating.
//!
//! Start-up order matters: the mirror is fully loaded before the service joins the queue
//! group, so a center started later never answers from a partial directory.

pub mod groups;
pub mod kick;
pub mod liveness;
pub mod peers;
pub mod presence;
pub mod service;

use std::sync::Arc;

use async_nats::Client;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::directory::Directory;
use crate::groups::Groups;
use crate::ident::CenterId;
use crate::store::Bucket;

/// Runs one center until `shutdown`, then leaves the queue group and says goodbye.
pub async fn run(
    config: config::Center,
    id: CenterId,
    client: Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subjects = config.nats.subjects()?;
    let js = async_nats::jetstream::new(client.clone());
    let description = "MRC user directory: user token -> live sessions";
    let store = Bucket::open(js.clone(), &config.bucket, config.replicas, description).await?;
    let directory = Directory::new(store);
    let description = "MRC groups: settings and memberships";
    let store = Bucket::open(js, &config.groups_bucket, config.replicas, description).await?;
    let groups = Groups::new(store);
    let followers = [
        directory.follow(shutdown.clone()).await?,
        groups.follow(shutdown.clone()).await?,
    ];
    let (users, gateways) = directory.mirror().counts();
    let group_count = groups.mirror().count();
    tracing::info!(center = %id, users, gateways, groups = group_count, "directory and groups loaded");

    let announcer = presence::Announcer::new(client.clone(), subjects.clone());
    let liveness = Arc::new(liveness::Liveness::new(config.heartbeat_timeout()));
    let peers = Arc::new(peers::Peers::default());
    let handlers = service::Handlers {
        directory: directory.clone(),
        groups,
        login_policy: config.login_policy,
        presence_policy: config.presence_policy,
        kicker: kick::Kicker {
            client: client.clone(),
            subjects: subjects.clone(),
            timeout: config.nats.request_timeout(),
        },
        announcer: announcer.clone(),
        liveness: liveness.clone(),
    };
    let service = service::start(
        &client,
        &id,
        &subjects,
        handlers,
        peers.clone(),
        config.concurrency,
    )
    .await?;
    let evictor = liveness::Evictor {
        client: client.clone(),
        subjects: subjects.clone(),
        center: id.clone(),
        directory,
        announcer,
    };
    let watching = tokio::spawn(liveness::run(liveness, evictor, shutdown.clone()));
    let broadcast = tokio::spawn(peers::run(
        client.clone(),
        subjects,
        id.clone(),
        peers,
        shutdown.clone(),
    ));

    tracing::info!(center = %id, "center ready");
    println!("mrc-center ready: id={id}");
    shutdown.cancelled().await;

    tracing::info!(center = %id, "stopping: leaving the queue group");
    if let Err(e) = service.stop().await {
        tracing::warn!(error = %e, "stopping the service");
    }
    for (name, task) in [("liveness", watching), ("broadcast", broadcast)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(task = name, error = %format!("{e:#}"), "task failed"),
            Err(e) => tracing::warn!(task = name, error = %e, "task panicked"),
        }
    }
    for follower in followers {
        follower.abort();
    }
    Ok(())
}
