//! The simulated books: ecosystems (two versions per book), exercises and pools, and the ground-truth SPARFA parameters of every question.

use std::collections::{HashMap, HashSet};

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::clock::{format_micros, DAY};
use crate::ids::random_uuid;

/// Question groups per page in the first ecosystem version.
const GROUPS_PER_PAGE: usize = 10;
/// Share of groups that get a new version in the second ecosystem version.
const NEW_VERSION_SHARE: f64 = 0.3;
/// Share of groups that already have two versions in the first ecosystem version.
const TWO_VERSION_SHARE: f64 = 0.15;
/// Share of groups that also load on one earlier concept (W stays sparse).
const CROSS_LOADING_SHARE: f64 = 0.25;

/// Global index of one exercise version in [`Content::exercises`].
pub(crate) type ExId = u32;
/// Global index of one exercise group in [`Content::groups`].
pub(crate) type GroupId = u32;
/// One group of a page with its versions in the first and in the second ecosystem version.
type PageGroup = (GroupId, Vec<ExId>, Vec<ExId>);

/// The assignment types Tutor personalizes, as pool type strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolType {
    Reading,
    Homework,
}

impl PoolType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PoolType::Reading => "reading",
            PoolType::Homework => "homework",
        }
    }
}

pub(crate) struct Exercise {
    pub uuid: Uuid,
    pub group: GroupId,
    pub version: u32,
}

pub(crate) struct Group {
    pub uuid: Uuid,
    pub book: u32,
    /// Concept (page index inside the book) whose pools hold this group.
    pub concept: u32,
    /// Ground-truth loadings (concept index in the book, W ≥ 0).
    pub loadings: Vec<(u32, f64)>,
    /// Ground-truth easiness d.
    pub easiness: f64,
    /// Eligible for reading pools (else homework-only); every group is in practice and CLUE pools.
    pub for_reading: bool,
    pub for_homework: bool,
}

/// Pools of one page in one ecosystem version.
#[derive(Default)]
pub(crate) struct PagePools {
    pub clue: Vec<ExId>,
    pub reading: Vec<ExId>,
    pub homework: Vec<ExId>,
    pub practice: Vec<ExId>,
}

impl PagePools {
    pub(crate) fn of_type(&self, pool_type: PoolType) -> &[ExId] {
        match pool_type {
            PoolType::Reading => &self.reading,
            PoolType::Homework => &self.homework,
        }
    }
}

pub(crate) struct EcosystemVersion {
    pub uuid: Uuid,
    pub root_uuid: Uuid,
    pub chapter_uuids: Vec<Uuid>,
    pub page_uuids: Vec<Uuid>,
    pub pages: Vec<PagePools>,
    /// Every exercise of this version, in `exercises[]` order.
    pub exercises: Vec<ExId>,
    pub imported_at: i64,
}

pub(crate) struct Book {
    pub cnx_uuid: Uuid,
    pub chapter_cnx: Vec<Uuid>,
    pub page_cnx: Vec<Uuid>,
    /// Page index range of each chapter.
    pub chapter_pages: Vec<std::ops::Range<u32>>,
    pub versions: [EcosystemVersion; 2],
}

impl Book {
    pub(crate) fn n_concepts(&self) -> usize {
        self.page_cnx.len()
    }
}

/// All generated content plus the global exclusion list Tutor sends to every course.
pub(crate) struct Content {
    pub books: Vec<Book>,
    pub exercises: Vec<Exercise>,
    pub groups: Vec<Group>,
    pub by_uuid: HashMap<Uuid, ExId>,
    pub versions_of_group: Vec<Vec<ExId>>,
    pub global_exclusions: Vec<Exclusion>,
}

/// One `exercise_exclusion` item.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exclusion {
    Exercise(ExId),
    Group(GroupId),
}

impl Content {
    /// Generates `n_books` books of `n_chapters` chapters each. `first_import_at` is
    /// the first version's import time; the second version is imported at `second_import_at`.
    pub(crate) fn generate(
        rng: &mut ChaCha8Rng,
        n_books: usize,
        n_chapters: usize,
        first_import_at: i64,
        second_import_at: i64,
    ) -> Content {
        let mut content = Content {
            books: Vec::with_capacity(n_books),
            exercises: Vec::new(),
            groups: Vec::new(),
            by_uuid: HashMap::new(),
            versions_of_group: Vec::new(),
            global_exclusions: Vec::new(),
        };
        let easiness = Normal::new(0.4, 0.9).expect("constant parameters are valid");
        for book_idx in 0..n_books {
            let book = content.generate_book(
                rng,
                book_idx as u32,
                n_chapters,
                &easiness,
                [first_import_at, second_import_at],
            );
            content.books.push(book);
        }
        // Two exercise versions and one group of each book are excluded globally.
        for book in &content.books {
            let pool = &book.versions[0].exercises;
            let picked: Vec<ExId> = pool.choose_multiple(rng, 3).copied().collect();
            if let [a, b, c] = picked[..] {
                content.global_exclusions.push(Exclusion::Exercise(a));
                content.global_exclusions.push(Exclusion::Exercise(b));
                content
                    .global_exclusions
                    .push(Exclusion::Group(content.exercises[c as usize].group));
            }
        }
        content
    }

    fn push_exercise(&mut self, rng: &mut ChaCha8Rng, group: GroupId, version: u32) -> ExId {
        let id = self.exercises.len() as ExId;
        let uuid = random_uuid(rng);
        self.exercises.push(Exercise {
            uuid,
            group,
            version,
        });
        self.by_uuid.insert(uuid, id);
        self.versions_of_group[group as usize].push(id);
        id
    }

    fn generate_book(
        &mut self,
        rng: &mut ChaCha8Rng,
        book_idx: u32,
        n_chapters: usize,
        easiness: &Normal<f64>,
        imported_at: [i64; 2],
    ) -> Book {
        let cnx_uuid = random_uuid(rng);
        let mut chapter_cnx = Vec::new();
        let mut page_cnx = Vec::new();
        let mut chapter_pages = Vec::new();
        for _ in 0..n_chapters {
            chapter_cnx.push(random_uuid(rng));
            let n_pages = rng.random_range(3..=4u32);
            let first = page_cnx.len() as u32;
            for _ in 0..n_pages {
                page_cnx.push(random_uuid(rng));
            }
            chapter_pages.push(first..first + n_pages);
        }
        let n_concepts = page_cnx.len();
        // Per page: (group, exercise versions in v1, exercise versions in v2).
        let mut page_groups: Vec<Vec<PageGroup>> = vec![Vec::new(); n_concepts];
        for (concept, groups) in page_groups.iter_mut().enumerate() {
            // One extra group appears only in the second version.
            for group_idx in 0..=GROUPS_PER_PAGE {
                let only_in_v2 = group_idx == GROUPS_PER_PAGE;
                let group = self.groups.len() as GroupId;
                let mut loadings = vec![(concept as u32, rng.random_range(0.6..1.6))];
                if concept > 0 && rng.random_bool(CROSS_LOADING_SHARE) {
                    loadings.push((
                        rng.random_range(0..concept) as u32,
                        rng.random_range(0.2..0.7),
                    ));
                }
                self.groups.push(Group {
                    uuid: random_uuid(rng),
                    book: book_idx,
                    concept: concept as u32,
                    loadings,
                    easiness: easiness.sample(rng),
                    for_reading: group_idx < GROUPS_PER_PAGE * 6 / 10 || only_in_v2,
                    for_homework: group_idx >= GROUPS_PER_PAGE * 4 / 10,
                });
                self.versions_of_group.push(Vec::new());
                let first = self.push_exercise(rng, group, 1);
                let (mut in_v1, mut in_v2) = (vec![first], vec![first]);
                if only_in_v2 {
                    in_v1.clear();
                } else if rng.random_bool(TWO_VERSION_SHARE) {
                    let second = self.push_exercise(rng, group, 2);
                    in_v1.push(second);
                    in_v2 = vec![second];
                }
                if !only_in_v2 && rng.random_bool(NEW_VERSION_SHARE) {
                    let version = in_v2.len() as u32 + 1;
                    in_v2 = vec![self.push_exercise(rng, group, version)];
                }
                groups.push((group, in_v1, in_v2));
            }
        }
        let versions = [0usize, 1].map(|version| {
            let uuid = random_uuid(rng);
            let root_uuid = random_uuid(rng);
            let chapter_uuids = (0..n_chapters).map(|_| random_uuid(rng)).collect();
            let page_uuids = (0..n_concepts).map(|_| random_uuid(rng)).collect();
            let mut pages = Vec::with_capacity(n_concepts);
            let mut exercises = Vec::new();
            for groups in &page_groups {
                let mut pools = PagePools::default();
                for (group, in_v1, in_v2) in groups {
                    let members = if version == 0 { in_v1 } else { in_v2 };
                    let info = &self.groups[*group as usize];
                    for &exercise in members {
                        exercises.push(exercise);
                        pools.clue.push(exercise);
                        pools.practice.push(exercise);
                        if info.for_reading {
                            pools.reading.push(exercise);
                        }
                        if info.for_homework {
                            pools.homework.push(exercise);
                        }
                    }
                }
                pages.push(pools);
            }
            EcosystemVersion {
                uuid,
                root_uuid,
                chapter_uuids,
                page_uuids,
                pages,
                exercises,
                imported_at: imported_at[version],
            }
        });
        Book {
            cnx_uuid,
            chapter_cnx,
            page_cnx,
            chapter_pages,
            versions,
        }
    }

    /// Every version of the group of `exercise` (the "any version" rule).
    pub(crate) fn group_of(&self, exercise: ExId) -> GroupId {
        self.exercises[exercise as usize].group
    }

    /// Expands exclusions to the set of excluded exercise versions.
    pub(crate) fn expand(&self, exclusions: &[Exclusion], into: &mut HashSet<ExId>) {
        for exclusion in exclusions {
            match *exclusion {
                Exclusion::Exercise(exercise) => {
                    into.insert(exercise);
                }
                Exclusion::Group(group) => {
                    into.extend(self.versions_of_group[group as usize].iter().copied())
                }
            }
        }
    }

    pub(crate) fn exclusions_json(&self, exclusions: &[Exclusion]) -> Value {
        Value::Array(
            exclusions
                .iter()
                .map(|exclusion| match *exclusion {
                    Exclusion::Exercise(exercise) => {
                        json!({"exercise_uuid": self.exercises[exercise as usize].uuid.to_string()})
                    }
                    Exclusion::Group(group) => {
                        json!({"exercise_group_uuid": self.groups[group as usize].uuid.to_string()})
                    }
                })
                .collect(),
        )
    }

    /// Ground-truth probability that a learner with `knowledge` (one value per concept of
    /// the group's book) answers a version of `group` correctly: σ(Σ_c W_cq U_c + d_q).
    pub(crate) fn p_correct(&self, group: GroupId, knowledge: &[f64]) -> f64 {
        let info = &self.groups[group as usize];
        let z: f64 = info
            .loadings
            .iter()
            .map(|&(concept, w)| w * knowledge[concept as usize])
            .sum::<f64>()
            + info.easiness;
        1.0 / (1.0 + (-z).exp())
    }

    /// The `/create_ecosystem` body of one version of one book.
    pub(crate) fn create_ecosystem_body(&self, book_idx: usize, version: usize) -> Value {
        let book = &self.books[book_idx];
        let eco = &book.versions[version];
        let uuid = |u: &Uuid| Value::String(u.to_string());
        let ids = |list: &[ExId]| {
            Value::Array(
                list.iter()
                    .map(|&e| uuid(&self.exercises[e as usize].uuid))
                    .collect(),
            )
        };
        let mut contents = Vec::with_capacity(1 + book.chapter_cnx.len() + book.page_cnx.len());
        contents.push(json!({
            "container_uuid": uuid(&eco.root_uuid),
            "container_parent_uuid": uuid(&eco.uuid),
            "container_cnx_identity": format!("{}@{}", book.cnx_uuid, version + 1),
            "pools": [],
        }));
        for (chapter, pages) in book.chapter_pages.iter().enumerate() {
            let clue: Vec<ExId> = pages
                .clone()
                .flat_map(|page| eco.pages[page as usize].clue.iter().copied())
                .collect();
            contents.push(json!({
                "container_uuid": uuid(&eco.chapter_uuids[chapter]),
                "container_parent_uuid": uuid(&eco.root_uuid),
                "container_cnx_identity": uuid(&book.chapter_cnx[chapter]),
                "pools": [{"use_for_clue": true, "use_for_personalized_for_assignment_types": [], "exercise_uuids": ids(&clue)}],
            }));
            for page in pages.clone() {
                let pools = &eco.pages[page as usize];
                contents.push(json!({
                    "container_uuid": uuid(&eco.page_uuids[page as usize]),
                    "container_parent_uuid": uuid(&eco.chapter_uuids[chapter]),
                    "container_cnx_identity": format!("{}@{}", book.page_cnx[page as usize], version + 1),
                    "pools": [
                        {"use_for_clue": true, "use_for_personalized_for_assignment_types": [], "exercise_uuids": ids(&pools.clue)},
                        {"use_for_clue": false, "use_for_personalized_for_assignment_types": ["reading"], "exercise_uuids": ids(&pools.reading)},
                        {"use_for_clue": false, "use_for_personalized_for_assignment_types": ["homework"], "exercise_uuids": ids(&pools.homework)},
                        {"use_for_clue": false, "use_for_personalized_for_assignment_types": ["practice"], "exercise_uuids": ids(&pools.practice)},
                        {"use_for_clue": false, "use_for_personalized_for_assignment_types": ["concept-coach"], "exercise_uuids": []},
                    ],
                }));
            }
        }
        let exercises: Vec<Value> = eco
            .exercises
            .iter()
            .map(|&exercise| {
                let info = &self.exercises[exercise as usize];
                let group = &self.groups[info.group as usize];
                let page = group.concept as usize;
                json!({
                    "exercise_uuid": uuid(&info.uuid),
                    "group_uuid": uuid(&group.uuid),
                    "version": info.version,
                    "los": [format!("cnxmod:{}", book.page_cnx[page]), format!("lo:sim:{}-{}", book_idx + 1, page + 1)],
                })
            })
            .collect();
        json!({
            "ecosystem_uuid": uuid(&eco.uuid),
            "book": {"cnx_identity": format!("{}@{}", book.cnx_uuid, version + 1), "contents": contents},
            "exercises": exercises,
            "imported_at": format_micros(eco.imported_at),
        })
    }

    /// The `ecosystem_map` from version 0 to version 1 of a book: every chapter and page
    /// maps to its successor, every first-version exercise to its page's new container.
    pub(crate) fn ecosystem_map(&self, book_idx: usize) -> Value {
        let book = &self.books[book_idx];
        let [from, to] = &book.versions;
        let mut book_container_mappings = vec![json!({
            "from_book_container_uuid": from.root_uuid.to_string(),
            "to_book_container_uuid": to.root_uuid.to_string(),
        })];
        for (old, new) in from
            .chapter_uuids
            .iter()
            .zip(&to.chapter_uuids)
            .chain(from.page_uuids.iter().zip(&to.page_uuids))
        {
            book_container_mappings.push(json!({
                "from_book_container_uuid": old.to_string(),
                "to_book_container_uuid": new.to_string(),
            }));
        }
        let exercise_mappings: Vec<Value> = from
            .exercises
            .iter()
            .map(|&exercise| {
                let concept = self.groups[self.group_of(exercise) as usize].concept as usize;
                json!({
                    "from_exercise_uuid": self.exercises[exercise as usize].uuid.to_string(),
                    "to_book_container_uuid": to.page_uuids[concept].to_string(),
                })
            })
            .collect();
        json!({
            "from_ecosystem_uuid": from.uuid.to_string(),
            "to_ecosystem_uuid": to.uuid.to_string(),
            "book_container_mappings": book_container_mappings,
            "exercise_mappings": exercise_mappings,
        })
    }
}

/// Days between a book version's import and the first course events that use it.
pub(crate) const IMPORT_LEAD: i64 = 7 * DAY;
