//! The model store: a consumer of `<prefix>.models` keeping in sled the latest model and the last ten per ecosystem, and an in-memory `ModelView` of the latest.

use std::collections::BTreeMap;
use std::sync::Arc;

use biglearn_domain::ids::EcosystemUuid;
use biglearn_events::{decode_model_computed, ModelComputed};
use biglearn_runtime::{
    Applied, ApplyError, Batch, ConsumerProgress, Projection, RunOptions, TopicConsumer,
};
use biglearn_scheduler::{EcosystemModel, ModelView};
use biglearn_stream::SharedStreamStore;
use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::ecosystem_model;
use crate::{sled_error, ModelError, SparfaConsumerError};

/// The sled tree of the model store.
pub const MODELS_TREE: &str = "sparfa_models";
/// Models kept per ecosystem, readable by matrix uuid.
pub const MODELS_KEPT: usize = 10;

/// `l ‖ ecosystem`: the latest model's bytes.
const LATEST: u8 = b'l';
/// `m ‖ matrix_uuid`: a kept model's bytes.
const BY_MATRIX: u8 = b'm';
/// `s ‖ ecosystem ‖ model_seq (BE)`: the matrix uuid of a kept model, for retention.
const BY_SEQ: u8 = b's';
/// `p ‖ partition (BE)`: the next offset of `<prefix>.models` to read.
const POSITION: u8 = b'p';

fn key(tag: u8, id: Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(tag);
    key.extend_from_slice(id.as_bytes());
    key
}

fn seq_key(ecosystem: Uuid, model_seq: i64) -> Vec<u8> {
    let mut key = key(BY_SEQ, ecosystem);
    // Sign-flipped so that sled's byte order is numeric order.
    key.extend_from_slice(&((model_seq as u64) ^ (1 << 63)).to_be_bytes());
    key
}

fn position_key(partition: i32) -> Vec<u8> {
    let mut key = vec![POSITION];
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// What storing one model did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// It is the ecosystem's latest model now.
    Latest,
    /// Kept by matrix uuid, but a higher model_seq is the latest.
    Older,
    /// The same model_seq was already stored.
    Duplicate,
}

/// Called with the ecosystem and model_seq of every new latest model.
pub type NewModelHook = Arc<dyn Fn(EcosystemUuid, i64) + Send + Sync>;

/// Latest models in memory over the sled tree.
pub struct ModelStore {
    tree: sled::Tree,
    latest: RwLock<BTreeMap<EcosystemUuid, Arc<EcosystemModel>>>,
    hooks: RwLock<Vec<NewModelHook>>,
}

impl ModelStore {
    /// Opens the tree and loads every ecosystem's latest model.
    pub fn open(db: &sled::Db) -> Result<ModelStore, SparfaConsumerError> {
        let tree = db
            .open_tree(MODELS_TREE)
            .map_err(sled_error("opening the model store"))?;
        let mut latest = BTreeMap::new();
        for row in tree.scan_prefix([LATEST]) {
            let (_, bytes) = row.map_err(sled_error("loading the latest models"))?;
            match decode_model_computed(&bytes)
                .map_err(ModelError::Decode)
                .and_then(|model| ecosystem_model(&model))
            {
                Ok(model) => {
                    latest.insert(model.ecosystem, Arc::new(model));
                }
                Err(error) => {
                    tracing::warn!(%error, "A stored model is unreadable; it is skipped.")
                }
            }
        }
        Ok(ModelStore {
            tree,
            latest: RwLock::new(latest),
            hooks: RwLock::new(Vec::new()),
        })
    }

    /// Calls `hook` after every new latest model (e.g. to recompute the ecosystem's results).
    pub fn on_new_model(&self, hook: NewModelHook) {
        self.hooks.write().push(hook);
    }

    /// A kept model (one of the last [`MODELS_KEPT`] of its ecosystem) by matrix uuid.
    pub fn model_by_matrix(
        &self,
        matrix_uuid: Uuid,
    ) -> Result<Option<ModelComputed>, SparfaConsumerError> {
        let Some(bytes) = self
            .tree
            .get(key(BY_MATRIX, matrix_uuid))
            .map_err(sled_error("reading a model"))?
        else {
            return Ok(None);
        };
        decode_model_computed(&bytes)
            .map(Some)
            .map_err(|error| SparfaConsumerError::Model(ModelError::Decode(error)))
    }

    /// The latest model of an ecosystem, as stored.
    pub fn latest_computed(
        &self,
        ecosystem: EcosystemUuid,
    ) -> Result<Option<ModelComputed>, SparfaConsumerError> {
        let Some(bytes) = self
            .tree
            .get(key(LATEST, ecosystem.0))
            .map_err(sled_error("reading a model"))?
        else {
            return Ok(None);
        };
        decode_model_computed(&bytes)
            .map(Some)
            .map_err(|error| SparfaConsumerError::Model(ModelError::Decode(error)))
    }

    /// A digest of the latest models for `state-hash`: SHA-256 over `(ecosystem,
    /// model_seq, training_set_sha256)` in ecosystem order, which replays and other
    /// clusters reproduce (fit times and positions are left out); `None` when empty.
    pub fn digest(&self) -> Result<Option<String>, SparfaConsumerError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut any = false;
        for row in self.tree.scan_prefix([LATEST]) {
            let (_, bytes) = row.map_err(sled_error("reading the latest models"))?;
            let model = decode_model_computed(&bytes).map_err(ModelError::Decode)?;
            hasher.update(model.ecosystem_uuid.as_bytes());
            hasher.update(model.model_seq.to_be_bytes());
            hasher.update(model.training_set_sha256);
            any = true;
        }
        Ok(any.then(|| {
            hasher
                .finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        }))
    }

    /// Ecosystems with a model.
    pub fn ecosystems(&self) -> Vec<EcosystemUuid> {
        self.latest.read().keys().copied().collect()
    }

    fn next_offsets(&self, partitions: i32) -> Result<Vec<(i32, i64)>, SparfaConsumerError> {
        (0..partitions)
            .map(|partition| {
                let offset = self
                    .tree
                    .get(position_key(partition))
                    .map_err(sled_error("reading the model store's positions"))?
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
                    .map_or(0, i64::from_be_bytes);
                Ok((partition, offset))
            })
            .collect()
    }

    /// The kept models of an ecosystem: model_seq → matrix uuid.
    fn kept_seqs(&self, ecosystem: Uuid) -> Result<BTreeMap<i64, Uuid>, SparfaConsumerError> {
        let mut seqs = BTreeMap::new();
        for row in self.tree.scan_prefix(key(BY_SEQ, ecosystem)) {
            let (k, v) = row.map_err(sled_error("reading kept models"))?;
            let (Some(seq), Ok(matrix)) = (
                k.get(17..25)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64),
                Uuid::from_slice(&v),
            ) else {
                continue;
            };
            seqs.insert(seq, matrix);
        }
        Ok(seqs)
    }

    /// Stores one batch of `<prefix>.models` records with the positions after them, in one
    /// sled batch; undecodable records are skipped. Returns what each decodable one did.
    pub fn apply(
        &self,
        records: &[(i32, i64, Vec<u8>)],
    ) -> Result<Vec<(EcosystemUuid, i64, Stored)>, SparfaConsumerError> {
        let mut batch = sled::Batch::default();
        let mut outcomes = Vec::new();
        let mut positions = BTreeMap::new();
        // Within the batch: the latest seq per ecosystem and the kept seqs so far.
        let mut latest_seq: BTreeMap<Uuid, i64> = BTreeMap::new();
        let mut kept: BTreeMap<Uuid, BTreeMap<i64, Uuid>> = BTreeMap::new();
        let mut new_latest: BTreeMap<EcosystemUuid, Arc<EcosystemModel>> = BTreeMap::new();
        for (partition, offset, bytes) in records {
            positions.insert(*partition, offset + 1);
            let model = match decode_model_computed(bytes) {
                Ok(model) => model,
                Err(error) => {
                    tracing::warn!(%error, partition, offset, "An undecodable model record was skipped.");
                    continue;
                }
            };
            let eco = model.ecosystem_uuid;
            let seqs = match kept.entry(eco) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let seqs = self.kept_seqs(eco)?;
                    if let Some((seq, _)) = seqs.last_key_value() {
                        latest_seq.insert(eco, *seq);
                    }
                    entry.insert(seqs)
                }
            };
            if seqs.contains_key(&model.model_seq) {
                outcomes.push((EcosystemUuid(eco), model.model_seq, Stored::Duplicate));
                continue;
            }
            let serving = match ecosystem_model(&model) {
                Ok(serving) => serving,
                Err(error) => {
                    tracing::warn!(%error, partition, offset, "A malformed model was skipped.");
                    continue;
                }
            };
            batch.insert(key(BY_MATRIX, model.matrix_uuid), bytes.as_slice());
            batch.insert(
                seq_key(eco, model.model_seq),
                model.matrix_uuid.as_bytes().to_vec(),
            );
            seqs.insert(model.model_seq, model.matrix_uuid);
            while seqs.len() > MODELS_KEPT {
                if let Some((seq, matrix)) = seqs.pop_first() {
                    batch.remove(seq_key(eco, seq));
                    batch.remove(key(BY_MATRIX, matrix));
                }
            }
            let is_latest = latest_seq
                .get(&eco)
                .is_none_or(|seq| *seq < model.model_seq);
            if is_latest {
                latest_seq.insert(eco, model.model_seq);
                batch.insert(key(LATEST, eco), bytes.as_slice());
                new_latest.insert(EcosystemUuid(eco), Arc::new(serving));
            }
            outcomes.push((
                EcosystemUuid(eco),
                model.model_seq,
                if is_latest {
                    Stored::Latest
                } else {
                    Stored::Older
                },
            ));
        }
        for (partition, next) in positions {
            batch.insert(position_key(partition), next.to_be_bytes().to_vec());
        }
        self.tree
            .apply_batch(batch)
            .map_err(sled_error("storing models"))?;
        let hooks = self.hooks.read().clone();
        let mut latest = self.latest.write();
        for (eco, model) in new_latest {
            let seq = model.model_seq;
            latest.insert(eco, model);
            for hook in &hooks {
                hook(eco, seq);
            }
        }
        Ok(outcomes)
    }
}

impl ModelView for ModelStore {
    fn latest_model(&self, ecosystem: EcosystemUuid) -> Option<Arc<EcosystemModel>> {
        self.latest.read().get(&ecosystem).cloned()
    }
}

/// The model store as a projection of `<prefix>.models` (positions stored with the
/// models, in the same sled batch).
struct ModelFollower {
    models: Arc<ModelStore>,
}

#[async_trait::async_trait]
impl Projection<()> for ModelFollower {
    fn positions(&self, _topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        Ok(self
            .models
            .next_offsets(n_partitions)
            .map_err(|error| ApplyError::fatal(error.to_string()))?
            .into_iter()
            .map(|(_, offset)| offset)
            .collect())
    }

    async fn apply(&self, batch: &Batch<'_, ()>) -> Result<Applied, ApplyError> {
        let records: Vec<(i32, i64, Vec<u8>)> = batch
            .records
            .iter()
            .filter_map(|record| Some((record.partition, record.offset, record.value.clone()?)))
            .collect();
        let models = self.models.clone();
        let outcomes = tokio::task::spawn_blocking(move || models.apply(&records))
            .await
            .map_err(|error| ApplyError::fatal(format!("the model store's task failed: {error}")))?
            .map_err(|error| ApplyError::fatal(error.to_string()))?;
        Ok(Applied {
            n_applied: outcomes.len() as u64,
            ..Applied::default()
        })
    }
}

/// Reads `topic` (`<prefix>.models`) into `models` from its stored positions until
/// `shutdown` turns true, reporting on `progress` (caught up once the high watermarks
/// seen at start are reached).
pub async fn run_model_store(
    models: Arc<ModelStore>,
    store: SharedStreamStore,
    topic: String,
    progress: watch::Sender<ConsumerProgress>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), SparfaConsumerError> {
    TopicConsumer::new(
        topic,
        "model_store",
        |_: &biglearn_stream::ConsumedRecord| (),
    )
    .feed("model_store", Arc::new(ModelFollower { models }), progress)
    .options(RunOptions {
        max_batch: 500,
        ..RunOptions::default()
    })
    .run(store, shutdown)
    .await
    .map_err(|error| SparfaConsumerError::Consumer(error.to_string()))
}
