//! Kafka group membership: a subscribed consumer that fetches nothing and publishes its assignment.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::context::BiglearnContext;
use super::KafkaConfig;
use crate::group::{Assignment, GroupMembership};
use crate::StreamError;

/// How often the membership thread polls: heartbeats and rebalances are served from
/// these polls, and a dropped membership leaves within one interval.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The group consumer's settings: range assignor (co-partitioned topics stay together),
/// nothing committed or stored, nothing ever read.
pub(super) fn group_config(config: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut client = config.client_config("group");
    client
        .set("group.id", group_id)
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", "range")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Partitions start at the end and are paused; this only avoids a reset error.
        .set("auto.offset.reset", "latest")
        .set("allow.auto.create.topics", "false")
        .set("enable.partition.eof", "false");
    config.apply_extra(&mut client);
    client
}

/// What the membership thread publishes.
#[derive(Clone, Debug, Default)]
struct GroupState {
    assignment: Assignment,
    /// Set once; the member has then left the group and owns nothing.
    failure: Option<GroupFailure>,
}

#[derive(Clone, Debug)]
struct GroupFailure {
    context: String,
    source: KafkaError,
}

/// Receives rebalances on the membership thread and turns them into [`Assignment`]s.
struct MembershipContext {
    group_id: String,
    /// Statistics reports go to the configuration's observer.
    client: BiglearnContext,
    state: watch::Sender<GroupState>,
    /// When the last revocation happened, while no assignment has replaced it.
    revoked_at: Mutex<Option<Instant>>,
}

impl MembershipContext {
    /// Publishes `partitions` as the new assignment if it differs from the current one
    /// (the first assignment is always published, even when empty: it says "joined").
    fn publish(&self, partitions: BTreeSet<(String, i32)>) {
        self.state.send_if_modified(|state| {
            let current = &state.assignment;
            if current.generation > 0 && current.partitions == partitions {
                return false;
            }
            let generation = current.generation + 1;
            tracing::info!(group = %self.group_id, generation, owned = ?partitions, "The consumer-group assignment changed.");
            state.assignment = Assignment {
                generation,
                partitions,
            };
            true
        });
    }

    fn fail(&self, context: String, source: KafkaError) {
        tracing::error!(group = %self.group_id, %context, error = %source, "Leaving the consumer group after an error.");
        self.state.send_modify(|state| {
            if state.failure.is_none() {
                state.failure = Some(GroupFailure { context, source });
            }
            if !state.assignment.partitions.is_empty() {
                state.assignment = Assignment {
                    generation: state.assignment.generation + 1,
                    partitions: BTreeSet::new(),
                };
            }
        });
    }

    fn failed(&self) -> bool {
        self.state.borrow().failure.is_some()
    }

    fn on_assign(&self, consumer: &BaseConsumer<MembershipContext>, given: &TopicPartitionList) {
        let mut start = TopicPartitionList::new();
        let mut owned = BTreeSet::new();
        for element in given.elements() {
            owned.insert((element.topic().to_owned(), element.partition()));
            // Start at the end so that even a fetch that beats the pause reads little.
            if let Err(error) =
                start.add_partition_offset(element.topic(), element.partition(), Offset::End)
            {
                self.fail("building the group assignment".to_owned(), error);
                return;
            }
        }
        if let Err(error) = consumer.assign(&start) {
            self.fail("accepting the group assignment".to_owned(), error);
            return;
        }
        // Records are never used: owners read with their own manual-assign readers.
        if let Err(error) = consumer.pause(&start) {
            tracing::warn!(group = %self.group_id, %error, "Could not pause the group consumer's partitions; their records are fetched and dropped.");
        }
        *self.revoked_at.lock() = None;
        self.publish(owned);
    }

    fn on_revoke(&self, consumer: &BaseConsumer<MembershipContext>) {
        let lost = consumer.assignment_lost();
        if let Err(error) = consumer.unassign() {
            tracing::warn!(group = %self.group_id, %error, "Could not unassign the group consumer.");
        }
        if lost {
            // The group may already have handed these partitions to someone else.
            *self.revoked_at.lock() = None;
            self.publish(BTreeSet::new());
        } else {
            // An eager rebalance revokes everything and usually hands most of it back
            // within seconds; the next assignment is published as one change, so owners
            // do not rebuild partitions they keep. See `expire_revocation`.
            self.revoked_at.lock().get_or_insert_with(Instant::now);
        }
    }

    /// Drops ownership once a revocation has gone unanswered for `grace`: after that
    /// long the coordinator may have completed the rebalance without this member.
    fn expire_revocation(&self, grace: Duration) {
        let mut revoked_at = self.revoked_at.lock();
        if revoked_at.is_some_and(|at| at.elapsed() >= grace) {
            *revoked_at = None;
            drop(revoked_at);
            tracing::warn!(group = %self.group_id, ?grace, "No new assignment after a revocation; giving up ownership until one arrives.");
            self.publish(BTreeSet::new());
        }
    }

    fn on_error(&self, error: KafkaError) {
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::InvalidGroupId
            )
        );
        if fatal {
            self.fail(
                "consuming as a group member (check that the subscribed topics exist and the group id is authorised)".to_owned(),
                error,
            );
        } else {
            // Transient (broker unreachable, coordinator moving): librdkafka retries,
            // and revokes with "assignment lost" if the session times out.
            tracing::warn!(group = %self.group_id, %error, "Consumer-group error; retrying.");
        }
    }
}

impl ClientContext for MembershipContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.client.stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(group = %self.group_id, %error, %reason, "librdkafka error in the group consumer.");
    }
}

impl ConsumerContext for MembershipContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(consumer, partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer),
            other => {
                // librdkafka asks the application to drop its assignment on errors.
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(group = %self.group_id, error = %code, "Rebalance error; dropping ownership until the next assignment.");
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(group = %self.group_id, %error, "Could not unassign the group consumer.");
                }
                *self.revoked_at.lock() = None;
                self.publish(BTreeSet::new());
            }
        }
    }
}

/// Membership through a Kafka consumer group. A dedicated thread polls the consumer
/// (serving heartbeats, rebalances and `max.poll.interval.ms`); dropping the membership
/// stops it, and closing the consumer sends LeaveGroup.
pub struct KafkaMembership {
    group_id: String,
    state: watch::Receiver<GroupState>,
    leave: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaMembership")
            .field("group_id", &self.group_id)
            .field("assignment", &self.state.borrow().assignment)
            .finish_non_exhaustive()
    }
}

impl KafkaMembership {
    /// Creates the group consumer, subscribes it to `topics` and starts its thread. The
    /// first assignment arrives asynchronously.
    pub(super) fn join(
        client: ClientConfig,
        stats: BiglearnContext,
        group_id: &str,
        topics: &[String],
    ) -> Result<KafkaMembership, StreamError> {
        let grace = client
            .get("session.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_millis);
        let (sender, receiver) = watch::channel(GroupState::default());
        let context = MembershipContext {
            group_id: group_id.to_owned(),
            client: stats,
            state: sender,
            revoked_at: Mutex::new(None),
        };
        let consumer: BaseConsumer<MembershipContext> = client
            .create_with_context(context)
            .map_err(|source| StreamError::Kafka {
                context: format!("creating the consumer of group {group_id}"),
                source,
            })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| StreamError::Kafka {
                context: format!("subscribing group {group_id} to {topics:?}"),
                source,
            })?;
        let leave = Arc::new(AtomicBool::new(false));
        let thread_leave = Arc::clone(&leave);
        std::thread::Builder::new()
            .name("biglearn-group".to_owned())
            .spawn(move || run_member(consumer, &thread_leave, grace))
            .map_err(|error| StreamError::Group {
                group_id: group_id.to_owned(),
                detail: format!("could not start the membership thread: {error}"),
            })?;
        tracing::info!(group = %group_id, ?topics, "Joining the consumer group.");
        Ok(KafkaMembership {
            group_id: group_id.to_owned(),
            state: receiver,
            leave,
        })
    }

    fn failure_error(&self, failure: &GroupFailure) -> StreamError {
        StreamError::Kafka {
            context: format!("{} in consumer group {}", failure.context, self.group_id),
            source: failure.source.clone(),
        }
    }
}

/// The membership thread: polls until told to leave or until a fatal error, then closes
/// the consumer (LeaveGroup, so the others rebalance at once).
fn run_member(consumer: BaseConsumer<MembershipContext>, leave: &AtomicBool, grace: Duration) {
    let context = Arc::clone(consumer.context());
    while !leave.load(Ordering::Acquire) && !context.failed() {
        match consumer.poll(POLL_INTERVAL) {
            // Records are never used (partitions are paused at the end anyway).
            None | Some(Ok(_)) => {}
            Some(Err(error)) => context.on_error(error),
        }
        if let Some((code, reason)) = consumer.client().fatal_error() {
            context.fail(
                format!("running the group consumer (fatal: {reason})"),
                KafkaError::Global(code),
            );
        }
        context.expire_revocation(grace);
    }
    drop(consumer);
    tracing::info!(group = %context.group_id, "Left the consumer group.");
}

impl Drop for KafkaMembership {
    fn drop(&mut self) {
        // The thread sees this within one poll interval and closes the consumer; the
        // caller does not wait for LeaveGroup (it may be on an async worker).
        self.leave.store(true, Ordering::Release);
    }
}

#[async_trait]
impl GroupMembership for KafkaMembership {
    fn current(&self) -> Assignment {
        self.state.borrow().assignment.clone()
    }

    async fn changed(
        &self,
        seen_generation: u64,
        timeout: Duration,
    ) -> Result<Option<Assignment>, StreamError> {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|state| {
                state.assignment.generation != seen_generation || state.failure.is_some()
            }),
        )
        .await;
        match waited {
            Err(_) => Ok(None),
            Ok(Err(_)) => Err(StreamError::Group {
                group_id: self.group_id.clone(),
                detail: "the membership thread stopped unexpectedly".to_owned(),
            }),
            Ok(Ok(state)) => match &state.failure {
                Some(failure) => Err(self.failure_error(failure)),
                None => Ok(Some(state.assignment.clone())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> (MembershipContext, watch::Receiver<GroupState>) {
        let (state, receiver) = watch::channel(GroupState::default());
        let context = MembershipContext {
            group_id: "g".to_owned(),
            client: BiglearnContext::new("group", Default::default()),
            state,
            revoked_at: Mutex::new(None),
        };
        (context, receiver)
    }

    fn owned(pairs: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
        pairs.iter().map(|&(t, p)| (t.to_owned(), p)).collect()
    }

    /// Publishes each set in turn and checks the generation after each.
    fn check(sets: &[&[(&str, i32)]], expected_generations: &[u64]) {
        let (context, receiver) = context();
        let generations: Vec<u64> = sets
            .iter()
            .map(|set| {
                context.publish(owned(set));
                receiver.borrow().assignment.generation
            })
            .collect();
        assert_eq!(generations, expected_generations, "{sets:?}");
    }

    #[test]
    fn generation_moves_only_on_change() {
        check(&[&[]], &[1]);
        check(&[&[("a", 0)], &[("a", 0)]], &[1, 1]);
        check(&[&[("a", 0)], &[("a", 0), ("a", 1)], &[]], &[1, 2, 3]);
        check(&[&[], &[], &[("b", 2)]], &[1, 1, 2]);
    }

    #[test]
    fn an_unanswered_revocation_expires_into_owning_nothing() {
        let (context, receiver) = context();
        context.publish(owned(&[("a", 0)]));
        *context.revoked_at.lock() = Some(Instant::now());
        context.expire_revocation(Duration::from_secs(3600));
        assert_eq!(receiver.borrow().assignment.partitions, owned(&[("a", 0)]));
        context.expire_revocation(Duration::ZERO);
        assert_eq!(receiver.borrow().assignment.generation, 2);
        assert!(receiver.borrow().assignment.partitions.is_empty());
        assert!(context.revoked_at.lock().is_none());
    }

    #[test]
    fn a_failure_drops_ownership_and_sticks() {
        let (context, receiver) = context();
        context.publish(owned(&[("a", 0)]));
        context.fail(
            "x".to_owned(),
            KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        context.fail("y".to_owned(), KafkaError::Global(RDKafkaErrorCode::Fail));
        let state = receiver.borrow().clone();
        assert!(state.assignment.partitions.is_empty());
        assert_eq!(state.assignment.generation, 2);
        assert_eq!(state.failure.map(|f| f.context), Some("x".to_owned()));
    }

    #[test]
    fn group_config_uses_the_range_assignor_and_commits_nothing() {
        let config = KafkaConfig::new("b:9092", "sparfa").with("session.timeout.ms", "6000");
        let client = group_config(&config, "dev.sparfa");
        for (key, value) in [
            ("group.id", "dev.sparfa"),
            ("partition.assignment.strategy", "range"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("session.timeout.ms", "6000"),
            ("client.id", "sparfa-group"),
        ] {
            assert_eq!(client.get(key), Some(value), "{key}");
        }
    }
}
