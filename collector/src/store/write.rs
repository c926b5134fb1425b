//! Inserts: a batch becomes one row of `recent`, its series found through an in-memory cache
//! of series ids (and created when new); a compaction follows once enough has come.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use foldhash::HashMap as FastMap;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::codec;
use super::compact::COMPACT_POINTS_MAX;
use super::schema::{INSERT_RECENT, INSERT_SERIES, SELECT_SERIES_ID};
use super::{LocalStore, StoreError};
use crate::error::error_chain;
use crate::reading::{CompactString, Reading, Readings, DEVICE_TAG};

/// The series id cache is emptied when it holds more than this many series (a tag with
/// unbounded values must not grow memory without bound). Room for 100,000 devices of 4
/// fields (400,000 series) and some more: at 100,000 the cache was emptied at every batch
/// there, and every series id looked up in SQLite again. A series costs about 100 bytes
/// when its device sends 4 fields (a group of measurement, tags and field ids, some 400
/// bytes, shared by the 4), up to about 300 with one field per device: 50 to 150 MB at the
/// bound, reached only with that many series written.
pub(super) const CACHE_MAX_SERIES: usize = 500_000;

impl LocalStore {
    /// Writes every field value of `readings`, in one transaction: all of them or none.
    /// A point that already exists (same measurement, tags, field and timestamp) is
    /// overwritten, so writing a batch again is harmless. Readings without fields add
    /// nothing.
    ///
    /// Once enough points have been written, this also runs [`LocalStore::compact`]; a
    /// failure there is logged, not returned (the batch is stored, and the next insert tries
    /// again).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails (see [`StoreError::is_retryable`]);
    /// nothing of the batch is then stored.
    pub fn insert(&mut self, readings: &(impl Readings + ?Sized)) -> Result<(), StoreError> {
        // After a failed (or panicked) insert, the cache may hold ids of series created by the
        // rolled-back transaction, which do not exist: forget them all.
        if self.cache.in_doubt || self.cache.series > CACHE_MAX_SERIES {
            self.cache.clear();
        }
        self.cache.in_doubt = true;
        let (points, bytes) = insert_all(&mut self.conn, &mut self.cache, readings)?;
        self.recent_points += points;
        self.recent_bytes += bytes;
        self.cache.in_doubt = false;
        if self.compaction_due() {
            if let Err(err) = self.compact() {
                tracing::warn!(path = %self.path.display(), error = %error_chain(&err), "local store compaction failed; will retry");
            }
        }
        Ok(())
    }

    /// Whether `recent` holds enough points to be compacted: [`COMPACT_POINTS`], or
    /// [`COMPACT_POINTS_PER_SERIES`] per series in the id cache (the series written lately)
    /// when that is more, up to [`COMPACT_POINTS_MAX`].
    fn compaction_due(&self) -> bool {
        let per_series = (self.cache.series as u64)
            .saturating_mul(self.compact_per_series)
            .min(COMPACT_POINTS_MAX);
        self.recent_points >= self.compact_points.max(per_series)
            || self.recent_bytes >= self.max_recent_bytes
    }

    /// Makes [`LocalStore::insert`] compact once `recent` takes `bytes` bytes, even with
    /// fewer points than it waits for otherwise: a store bounded by `max_bytes` keeps
    /// `recent` well within the bound (the sink allows it a sixteenth).
    pub fn limit_recent(&mut self, bytes: u64) {
        self.max_recent_bytes = bytes;
    }
}

/// Appends `readings` to `recent` as one row; returns how many points it holds, and its
/// blob's size.
pub(super) fn insert_all(
    conn: &mut Connection,
    cache: &mut SeriesCache,
    readings: &(impl Readings + ?Sized),
) -> Result<(u64, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut new_series = 0;
    let mut points = 0u64;
    let mut data = Vec::with_capacity(readings.count() * 32);
    readings.try_for_each(|r| {
        if r.fields.is_empty() {
            return Ok(());
        }
        let group = cache.group(r)?;
        for (i, (name, value)) in r.fields.iter().enumerate() {
            let id = match group.field_id(i, name) {
                Some(id) => id,
                None => {
                    let id = series_id(&tx, group, name)?;
                    group.fields.push((name.clone(), id));
                    new_series += 1;
                    id
                }
            };
            codec::put_batch_point(&mut data, id, r.timestamp, value);
            points += 1;
        }
        Ok::<(), StoreError>(())
    })?;
    if points > 0 {
        tx.prepare_cached(INSERT_RECENT)?
            .execute(params![points, data])?;
    }
    tx.commit()?;
    cache.series += new_series;
    Ok((points, data.len() as u64))
}

/// The id of series (group, field), created when it does not exist.
pub(super) fn series_id(
    conn: &Connection,
    group: &CachedGroup,
    field: &str,
) -> Result<i64, StoreError> {
    let mut select = conn.prepare_cached(SELECT_SERIES_ID)?;
    let found = select
        .query_row(
            params![group.measurement.as_str(), group.tags_json, field],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    let mut insert = conn.prepare_cached(INSERT_SERIES)?;
    insert.execute(params![
        group.measurement.as_str(),
        group.tags_json,
        field,
        group.device
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The canonical form of a tag set (a JSON object, keys sorted, the last value of a repeated
/// key) and its device tag.
pub(super) fn canonical_tags(
    tags: &[(CompactString, CompactString)],
) -> Result<(String, Option<String>), StoreError> {
    let map: BTreeMap<&str, &str> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let json = serde_json::to_string(&map).map_err(StoreError::EncodeTags)?;
    Ok((json, map.get(DEVICE_TAG).map(|d| (*d).to_owned())))
}

/// Series ids by (measurement, tags) and field, so that inserting a known series neither
/// allocates nor asks SQLite.
#[derive(Debug, Default)]
pub(super) struct SeriesCache {
    pub(super) hasher: RandomState,
    /// Groups by the hash of (measurement, tags), held in the map itself (one cache miss
    /// fewer per reading than a bucket on the heap: with 30,000 series, that was most of
    /// the lookup's cost).
    pub(super) groups: FastMap<u64, CachedGroup>,
    /// The groups whose hash is another group's (practically never).
    pub(super) collided: Vec<CachedGroup>,
    /// How many series ids are cached.
    pub(super) series: usize,
    /// An insert is under way or failed: ids it cached may belong to a rolled-back transaction.
    pub(super) in_doubt: bool,
}

#[derive(Debug)]
pub(super) struct CachedGroup {
    pub(super) measurement: CompactString,
    pub(super) tags: Vec<(CompactString, CompactString)>,
    pub(super) tags_json: String,
    pub(super) device: Option<String>,
    /// Series ids by field name, in the order the fields first came: a device sends its
    /// fields in the same order every time, so the field at index `i` of a reading is
    /// looked for at index `i` first (one comparison instead of a hash and a comparison).
    pub(super) fields: Vec<(CompactString, i64)>,
}

impl CachedGroup {
    /// The entry of `r`'s measurement and tags, with no series yet.
    fn new(r: &Reading) -> Result<CachedGroup, StoreError> {
        let (tags_json, device) = canonical_tags(&r.tags)?;
        Ok(CachedGroup {
            measurement: r.measurement.clone(),
            tags: r.tags.clone(),
            tags_json,
            device,
            fields: Vec::new(),
        })
    }

    /// The cached series id of field `name`, the `i`th of its reading.
    pub(super) fn field_id(&self, i: usize, name: &str) -> Option<i64> {
        match self.fields.get(i) {
            Some((n, id)) if n == name => Some(*id),
            _ => self
                .fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| *id),
        }
    }
}

impl SeriesCache {
    pub(super) fn clear(&mut self) {
        self.groups.clear();
        self.collided.clear();
        self.series = 0;
        self.in_doubt = false;
    }

    /// The cache entry of `r`'s measurement and tags, created empty when missing.
    fn group(&mut self, r: &Reading) -> Result<&mut CachedGroup, StoreError> {
        let hash = self
            .hasher
            .hash_one((r.measurement.as_str(), r.tags.as_slice()));
        self.group_hashed(hash, r)
    }

    /// [`SeriesCache::group`], given the hash of `r`'s measurement and tags.
    pub(super) fn group_hashed(
        &mut self,
        hash: u64,
        r: &Reading,
    ) -> Result<&mut CachedGroup, StoreError> {
        let is_r = |g: &CachedGroup| g.measurement == r.measurement && g.tags == r.tags;
        match self.groups.entry(hash) {
            Entry::Occupied(e) if is_r(e.get()) => return Ok(e.into_mut()),
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => return Ok(e.insert(CachedGroup::new(r)?)),
        }
        let i = match self.collided.iter().position(is_r) {
            Some(i) => i,
            None => {
                self.collided.push(CachedGroup::new(r)?);
                self.collided.len() - 1
            }
        };
        Ok(&mut self.collided[i])
    }
}
