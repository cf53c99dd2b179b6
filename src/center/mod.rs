//! The center: owns no state of its own. It keeps an in-memory mirror of the directory
//! bucket, answers the `mrc-center` micro service from it, writes the bucket on the
//! gateways' behalf, publishes presence, and evicts gateways that stop heartbeating.
//!
//! Start-up order matters: the mirror is fully loaded before the service joins the queue
//! group, so a center started later never answers from a partial directory. With
//! `--http-listen` it also answers operators' probes and scrapes ([`http`]).

pub(crate) mod group_endpoints;
pub mod http;
pub(crate) mod kick;
pub(crate) mod liveness;
pub(crate) mod peers;
pub(crate) mod presence;
pub(crate) mod service;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::service::Service;
use async_nats::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::directory::mirror::Mirror as DirectoryMirror;
use crate::directory::Directory;
use crate::exit::BadConfig;
use crate::groups::mirror::Mirror as GroupsMirror;
use crate::groups::Groups;
use crate::ident::CenterId;
use crate::retry::{self, Attempt};
use crate::store::{self, Bucket, OpenError};
use crate::subject;
pub use http::Http;

/// How long a stopping center waits for its tasks in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs one center until `shutdown`, then leaves the queue group and says goodbye.
///
/// Opening the buckets and loading the mirrors are retried with backoff until they succeed
/// (JetStream may have no quorum, or a stream leader may be paused); only a configuration
/// JetStream can never accept ends the center, as a [`BadConfig`] (exit 64). `http`, the
/// operators' listener when there is one, is told once the service answers.
pub async fn run(
    config: config::Center,
    id: CenterId,
    client: crate::connection::Nats,
    http: Option<&Http>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subjects = config.nats.subjects()?;
    let Some(Loaded {
        directory,
        groups,
        followers,
    }) = load(&config, &client, &shutdown).await?
    else {
        tracing::info!(center = %id, "stopped before the directory was loaded");
        return Ok(());
    };
    let (users, gateways) = directory.mirror().counts();
    let group_count = groups.mirror().count();
    tracing::info!(center = %id, users, gateways, groups = group_count, "directory and groups loaded");

    // Every task of this center, waited for (within a bound) when it stops.
    let tasks = TaskTracker::new();
    let announcer = presence::Announcer::new(client.client().clone(), subjects.clone());
    let liveness = Arc::new(liveness::Liveness::new(config.heartbeat_timeout()));
    let peers = Arc::new(peers::Peers::default());
    let mirrors = (directory.mirror().clone(), groups.mirror().clone());
    let handlers = service::Handlers {
        directory: directory.clone(),
        groups,
        login_policy: config.login_policy,
        presence_policy: config.presence_policy,
        kicker: kick::Kicker {
            client: client.clone(),
            subjects: subjects.clone(),
            timeout: config.nats.request_timeout(),
            tasks: tasks.clone(),
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
        &tasks,
    )
    .await?;
    let ready = serving(&id, http, &service, mirrors).await;
    let evictor = liveness::Evictor {
        client: client.client().clone(),
        subjects: subjects.clone(),
        center: id.clone(),
        directory,
        announcer,
        tasks: tasks.clone(),
    };
    let watching = tasks.spawn(liveness::run(liveness, evictor, shutdown.clone()));
    let broadcast = tasks.spawn(peers::run(
        client.client().clone(),
        subjects.clone(),
        id.clone(),
        peers,
        shutdown.clone(),
    ));

    let timeout = config.nats.request_timeout();
    crate::connection::confirm_subscriptions(&client, &subjects, timeout, &shutdown).await;
    tracing::info!(center = %id, "center ready");
    println!("{ready}");
    shutdown.cancelled().await;

    tracing::info!(center = %id, "stopping: leaving the queue group");
    if let Err(e) = service.stop().await {
        tracing::warn!(error = %e, "stopping the service");
    }
    let loops = [("liveness", watching), ("broadcast", broadcast)];
    stop(loops, followers, tasks).await;
    Ok(())
}

/// After the service stopped: waits for the center's loops (which saw the shutdown),
/// stops following the buckets, and lets requests being answered, kicks and evictions in
/// flight finish, within a bound.
async fn stop(
    loops: [(&str, JoinHandle<anyhow::Result<()>>); 2],
    followers: [JoinHandle<()>; 2],
    tasks: TaskTracker,
) {
    for (name, task) in loops {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(task = name, error = %format!("{e:#}"), "task failed"),
            Err(e) => tracing::warn!(task = name, error = %e, "task panicked"),
        }
    }
    for follower in followers {
        follower.abort();
    }
    tasks.close();
    if tokio::time::timeout(STOP_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(left = tasks.len(), "tasks still running at stop");
    }
}

/// Tells the operators' listener, if any, that the service answers from `mirrors`; the
/// `mrc-center ready` line, naming that listener.
async fn serving(
    id: &CenterId,
    http: Option<&Http>,
    service: &Service,
    (directory, groups): (Arc<DirectoryMirror>, Arc<GroupsMirror>),
) -> String {
    let mut ready = format!("mrc-center ready: id={id}");
    if let Some(http) = http {
        let ping = subject::center_ping(&service.info().await.id);
        http.serving(http::Serving {
            directory,
            groups,
            ping,
        });
        ready.push_str(&format!(" http=http://{}", http.addr()));
    }
    ready
}

/// Both buckets, their mirrors fully loaded, and the tasks that keep them current.
struct Loaded {
    directory: Directory,
    groups: Groups,
    followers: [JoinHandle<()>; 2],
}

/// Opens both buckets and loads both mirrors, each step retried until it succeeds;
/// `None` when `shutdown` came first.
async fn load(
    config: &config::Center,
    client: &Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Loaded>> {
    let js = jetstream::new(client.clone());
    let description = "MRC user directory: user token -> live sessions";
    let Some(store) = open(&js, &config.bucket, config.replicas, description, shutdown).await?
    else {
        return Ok(None);
    };
    let directory = Directory::new(store);
    let description = "MRC groups: settings and memberships";
    let name = &config.groups_bucket;
    let Some(store) = open(&js, name, config.replicas, description, shutdown).await? else {
        return Ok(None);
    };
    let groups = Groups::new(store);
    if !ensure_inbox(&js, config, shutdown).await? {
        return Ok(None);
    }
    let what = format!("loading the directory (bucket {})", config.bucket);
    let Some(users) = until_loaded(&what, shutdown, || directory.follow(shutdown.clone())).await
    else {
        return Ok(None);
    };
    let what = format!("loading the groups (bucket {name})");
    let Some(members) = until_loaded(&what, shutdown, || groups.follow(shutdown.clone())).await
    else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        directory,
        groups,
        followers: [users, members],
    }))
}

/// Opens bucket `name`, retrying while JetStream does not serve it.
async fn open(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    description: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Bucket>> {
    let what = format!("opening KV bucket {name}");
    let opened = retry::until_done(&what, shutdown, || async move {
        match Bucket::open(js.clone(), name, replicas, description).await {
            Ok(bucket) => Attempt::Done(Ok(bucket)),
            Err(OpenError::Config(e)) => Attempt::Done(Err(BadConfig(e))),
            Err(e @ OpenError::Unavailable(_)) => Attempt::Failed(e),
        }
    })
    .await;
    Ok(opened.transpose()?)
}

/// Creates the inbox stream or brings it to the configured bounds, retrying while
/// JetStream does not serve it; false when `shutdown` came first.
async fn ensure_inbox(
    js: &jetstream::Context,
    config: &config::Center,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let inbox = &config.inbox;
    let subjects = config.nats.subjects()?.inbox_all();
    let what = format!("opening the inbox stream {}", inbox.stream);
    let limits = inbox.limits();
    let ensured = retry::until_done(&what, shutdown, || {
        let subjects = subjects.clone();
        let limits = &limits;
        async move {
            let ensured =
                store::inbox::ensure(js, &inbox.stream, subjects, config.replicas, limits);
            match ensured.await {
                Ok(()) => Attempt::Done(Ok(())),
                Err(OpenError::Config(e)) => Attempt::Done(Err(BadConfig(e))),
                Err(e @ OpenError::Unavailable(_)) => Attempt::Failed(e),
            }
        }
    })
    .await;
    match ensured {
        Some(result) => result.map(|()| true).map_err(Into::into),
        None => Ok(false),
    }
}

/// Runs `follow` (a full load of a mirror, then a follower task) until it succeeds.
async fn until_loaded<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut follow: F,
) -> Option<JoinHandle<()>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<JoinHandle<()>>>,
{
    retry::until_done(what, shutdown, || {
        let loading = follow();
        async move {
            match loading.await {
                Ok(follower) => Attempt::Done(follower),
                Err(e) => Attempt::Failed(format!("{e:#}")),
            }
        }
    })
    .await
}
