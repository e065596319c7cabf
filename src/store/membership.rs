//! Reading what the membership answers need, through the port: documents in bulk (`get_docs`,
//! past the caches, kept only as the few fields the rules read), the devices Kazoo's
//! `attributes/owned` gives each user, the account's groups and its callflows with their
//! documents (views read as they arrive).
//!
//! Bounds: at most [`MAX_GROUPS`] nested groups are read for one expansion and at most
//! [`MAX_DOCS`] documents are held at once (an account-wide pass forgets them between groups
//! past that); `attributes/owned` is read key by key for a few users, whole (its device rows
//! only) for many, or where it is computed from the documents.
use std::collections::HashSet;

use futures::TryStreamExt;
use serde_json::{json, Value};

use super::views::Installed;
use super::{RowStream, Store, StoreResult, View, ViewQuery, ViewRow};
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::domain::membership::{self, DocFacts, DocState, Facts, Member, MemberType};

/// Documents asked for in one bulk read.
const BULK: usize = 200;
/// Users whose devices are read key by key; past this, the whole view is read once.
const OWNED_BY_KEY: usize = 100;
/// Nested groups read for one expansion.
pub const MAX_GROUPS: usize = 1_000;
/// Documents held at once.
pub const MAX_DOCS: usize = 50_000;

/// What has been read of one account, for its membership answers.
pub struct Reader<'a> {
    store: &'a Store,
    views: &'a Installed,
    account: AccountId,
    db: DbName,
    pub facts: Facts,
    /// Every device row of `attributes/owned` is in `facts.owned`.
    owned_whole: bool,
    /// Something was left unread (a bound was reached).
    pub truncated: bool,
}

impl<'a> Reader<'a> {
    pub fn new(store: &'a Store, views: &'a Installed, account: &AccountId) -> Self {
        Self {
            store,
            views,
            account: account.clone(),
            db: account.db(),
            facts: Facts::default(),
            owned_whole: false,
            truncated: false,
        }
    }

    /// The account document (its do-not-disturb and forward apply to every device).
    pub async fn account(&mut self) -> StoreResult<()> {
        if self.facts.account.is_none() {
            let account = super::account(self.store, &self.account).await?;
            self.facts.account = Some(DocFacts::read(account.as_ref().map(|a| &*a.doc)));
        }
        Ok(())
    }

    /// Reads the documents of `ids` not read yet. An id no document can have is missing.
    pub async fn docs(&mut self, ids: impl IntoIterator<Item = String>) -> StoreResult<()> {
        let mut seen = HashSet::new();
        let mut wanted = Vec::new();
        for id in ids {
            if self.facts.docs.contains_key(&id) || !seen.insert(id.clone()) {
                continue;
            }
            match DocId::parse(&id) {
                Some(doc_id) => wanted.push(doc_id),
                None => {
                    self.facts.docs.insert(id, DocFacts::missing());
                }
            }
        }
        for chunk in wanted.chunks(BULK) {
            let docs = self.store.get_docs(&self.db, chunk).await?;
            for (id, doc) in chunk.iter().zip(docs) {
                let facts = DocFacts::read(doc.as_ref());
                self.facts.docs.insert(id.as_str().to_owned(), facts);
            }
        }
        Ok(())
    }

    /// Forgets the documents read so far once more than [`MAX_DOCS`] are held.
    pub fn bound(&mut self) {
        if self.facts.docs.len() > MAX_DOCS {
            self.facts.docs.clear();
        }
    }

    /// The devices `attributes/owned` gives each of `users` (key `[user, "device"]`, in
    /// device-id order).
    pub async fn owned(&mut self, users: &[String]) -> StoreResult<()> {
        if self.owned_whole {
            return Ok(());
        }
        let unread: Vec<&String> = users
            .iter()
            .filter(|u| !self.facts.owned.contains_key(*u))
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        if unread.len() > OWNED_BY_KEY
            || self
                .views
                .is_scanned(self.store, &self.db, View::AttributesOwned)
                .await?
        {
            return self.all_owned().await;
        }
        for user in unread {
            let query = ViewQuery {
                key: Some(json!([user, "device"])),
                ..Default::default()
            };
            let rows = self
                .views
                .query(self.store, &self.db, View::AttributesOwned, &query)
                .await?;
            let devices = rows.into_iter().map(|row| row.id).collect();
            self.facts.owned.insert(user.clone(), devices);
        }
        Ok(())
    }

    /// Every device row of `attributes/owned`, read once as it arrives.
    pub async fn all_owned(&mut self) -> StoreResult<()> {
        if self.owned_whole {
            return Ok(());
        }
        let mut rows = self
            .views
            .rows(
                self.store,
                &self.db,
                View::AttributesOwned,
                &ViewQuery::default(),
            )
            .await?;
        self.facts.owned.clear();
        while let Some(row) = rows.try_next().await? {
            let (Some(user), Some("device")) = (
                row.key.get(0).and_then(Value::as_str),
                row.key.get(1).and_then(Value::as_str),
            ) else {
                continue;
            };
            self.facts
                .owned
                .entry(user.to_owned())
                .or_default()
                .push(row.id);
        }
        self.owned_whole = true;
        Ok(())
    }

    /// Everything a ring group with these members needs: nested groups (breadth first, at most
    /// [`MAX_GROUPS`]), every entry's document, users' devices, devices' owners, the account.
    pub async fn for_members(&mut self, members: &[Member]) -> StoreResult<()> {
        let mut entries: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let mut users: Vec<String> = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for m in members {
            match m.endpoint_type {
                MemberType::User => users.push(m.id.clone()),
                MemberType::Group => pending.push(m.id.clone()),
                _ => {}
            }
        }
        let mut groups_read: HashSet<String> = HashSet::new();
        while !pending.is_empty() {
            if groups_read.len() + pending.len() > MAX_GROUPS {
                self.truncated = true;
                pending.truncate(MAX_GROUPS.saturating_sub(groups_read.len()));
            }
            self.docs(pending.iter().cloned()).await?;
            let mut next = Vec::new();
            for group in std::mem::take(&mut pending) {
                groups_read.insert(group.clone());
                let endpoints = self.facts.doc(&group).endpoints;
                for (key, entry) in endpoints {
                    // A member of a nested group keeps the parent's `group` type unless its
                    // entry says otherwise.
                    match entry.get("type").and_then(Value::as_str).unwrap_or("group") {
                        "user" => users.push(key.clone()),
                        "group" if !groups_read.contains(&key) => next.push(key.clone()),
                        _ => {}
                    }
                    entries.push(key);
                }
            }
            next.sort();
            next.dedup();
            pending = next;
        }
        self.entries(entries, &users).await
    }

    /// The documents of a group's direct members, their users' devices, the devices' owners,
    /// and whatever the soft-deleted nested groups among them still ring.
    pub async fn for_findings(&mut self, endpoints: &[(String, Value)]) -> StoreResult<()> {
        let users: Vec<String> = endpoints
            .iter()
            .filter(|(_, e)| {
                !matches!(
                    e.get("type").and_then(Value::as_str),
                    Some("device" | "group")
                )
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.entries(endpoints.iter().map(|(k, _)| k.clone()).collect(), &users)
            .await?;
        let deleted_groups: Vec<Member> = endpoints
            .iter()
            .filter(|(k, _)| {
                let doc = self.facts.doc(k);
                doc.pvt_type.as_deref() == Some("group") && doc.state == DocState::SoftDeleted
            })
            .map(|(k, _)| Member::group(k))
            .collect();
        if !deleted_groups.is_empty() {
            self.for_members(&deleted_groups).await?;
        }
        Ok(())
    }

    /// `entries`' documents, `users`' devices and their documents, the devices' owners.
    async fn entries(&mut self, entries: Vec<String>, users: &[String]) -> StoreResult<()> {
        self.account().await?;
        self.docs(entries).await?;
        self.owned(users).await?;
        let devices: Vec<String> = users
            .iter()
            .flat_map(|u| self.facts.owned.get(u).cloned().unwrap_or_default())
            .collect();
        self.docs(devices).await?;
        let owners: Vec<String> = self
            .facts
            .docs
            .values()
            .filter(|d| d.pvt_type.as_deref() != Some("user"))
            .flat_map(DocFacts::owners)
            .collect();
        self.docs(owners).await
    }

    /// Every live group's dangling members: the groups read as they arrive, at most
    /// [`GROUPS_AT_ONCE`] or about [`MEMBERS_AT_ONCE`] members at a time, their members'
    /// documents together, `attributes/owned` once.
    pub async fn account_report(&mut self) -> StoreResult<AccountReport> {
        self.account().await?;
        self.all_owned().await?;
        let mut rows = self.documents(View::GroupsListing).await?;
        let mut report = AccountReport {
            checked: 0,
            groups: Vec::new(),
            truncated: false,
        };
        let mut batch: Vec<(String, Option<String>, DocFacts)> = Vec::new();
        let mut batch_members = 0;
        loop {
            let row = rows.try_next().await?;
            let done = row.is_none();
            if let Some((id, doc)) = row.and_then(row_doc) {
                let rev = doc.get("_rev").and_then(Value::as_str).map(str::to_owned);
                let group = DocFacts::read(Some(&doc));
                batch_members += group.endpoints.len();
                batch.push((id, rev, group));
            }
            if batch.len() < GROUPS_AT_ONCE && batch_members < MEMBERS_AT_ONCE && !done {
                continue;
            }
            batch_members = 0;
            let members: Vec<(String, Value)> = batch
                .iter()
                .flat_map(|(_, _, g)| g.endpoints.iter().cloned())
                .collect();
            self.for_findings(&members).await?;
            for (id, rev, group) in batch.drain(..) {
                report.checked += 1;
                let findings = membership::findings(&self.facts, &group.endpoints);
                if !findings.is_empty() {
                    report.groups.push(ReportedGroup {
                        id,
                        rev,
                        name: group.name,
                        findings,
                    });
                }
            }
            self.bound();
            if done {
                break;
            }
        }
        report.truncated = self.truncated;
        Ok(report)
    }

    /// Calls `each` with every live callflow (`callflows/crossbar_listing`) or group
    /// (`groups/crossbar_listing`) and its document, one at a time as they arrive; returns how
    /// many.
    pub async fn each_document(
        &self,
        view: View,
        mut each: impl FnMut(String, Value),
    ) -> StoreResult<usize> {
        let mut rows = self.documents(view).await?;
        let mut count = 0;
        while let Some(row) = rows.try_next().await? {
            if let Some((id, doc)) = row_doc(row) {
                count += 1;
                each(id, doc);
            }
        }
        Ok(count)
    }

    /// Every live callflow (`callflows/crossbar_listing`) or group (`groups/crossbar_listing`)
    /// with its document, read as the rows arrive.
    pub async fn documents(&self, view: View) -> StoreResult<RowStream> {
        let query = ViewQuery {
            include_docs: true,
            ..Default::default()
        };
        self.views.rows(self.store, &self.db, view, &query).await
    }
}

/// A row's id and document, unless it has none (or one that is not JSON).
pub fn row_doc(row: ViewRow) -> Option<(String, Value)> {
    let doc = serde_json::from_str(row.doc?.get()).ok()?;
    Some((row.id, doc))
}

/// Groups whose members are read together by an account-wide pass, at most.
const GROUPS_AT_ONCE: usize = 100;
/// Members read together by an account-wide pass: a batch of groups ends early past this.
const MEMBERS_AT_ONCE: usize = 5_000;

/// A group with findings, and the revision they were found in.
pub struct ReportedGroup {
    pub id: String,
    pub rev: Option<String>,
    pub name: Option<String>,
    pub findings: Vec<membership::Finding>,
}

/// The dangling members of every live group of an account.
pub struct AccountReport {
    pub checked: usize,
    /// The groups with findings, in id order.
    pub groups: Vec<ReportedGroup>,
    pub truncated: bool,
}

impl AccountReport {
    pub fn json(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|g| json!({"id": g.id, "name": g.name, "findings": g.findings}))
            .collect();
        json!({"groups_checked": self.checked, "groups": groups, "truncated": self.truncated})
    }
}
