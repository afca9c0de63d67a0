//! What every store backend must do, written once: test bodies that
//! each backend's tests run against a store of their own making (a SQLite
//! file, a PostgreSQL schema).

use std::sync::Arc;

use super::*;
use crate::policy::Decision;
use crate::probe::Verdict;

/// A source row: `/images/00000i.png`, present, from `images.txt`.
pub(crate) fn row(i: usize) -> RowWrite {
    RowWrite {
        src: Arc::from(format!("/images/{i:06}.png")),
        probe: format!("https://origin.example/images/{i:06}.png"),
        rec: Rec::new(1_700_000_000_000, true),
        validators: None,
        candidate: None,
        seen_in: Some("images.txt".into()),
    }
}

/// An answered API call at `at` for project `shop` of team `team`.
pub(crate) fn call(at: Millis, endpoint: Endpoint, srcs: &[&str], status: u16) -> LedgerEntry {
    LedgerEntry {
        time: rfc3339(at),
        at,
        endpoint,
        project: "shop".into(),
        team_id: Some("team".into()),
        slug: None,
        src_images: srcs.iter().map(|s| s.to_string()).collect(),
        status: Some(status),
        vercel_id: Some(format!("id-{at}")),
        error: None,
        attempts: 1,
    }
}

/// Calls, discoveries and passes read back as written.
pub(crate) async fn calls_discoveries_and_passes_read_back(store: &dyn Store) {
    let (one, two) = (row(1).src.to_string(), row(2).src.to_string());
    store
        .write("w", vec![row(1), row(2)], Vec::new())
        .await
        .unwrap();
    let mut purged = row(1);
    purged.rec.last_decision = Some(Decision::Purge);
    purged.seen_in = None;
    let mut first = call(10, Endpoint::Delete, &[&one], 200);
    first.slug = Some("slug".into());
    store
        .record_call(first, vec![("w".into(), purged)])
        .await
        .unwrap();
    store
        .record_call(call(20, Endpoint::Invalidate, &[&two], 200), Vec::new())
        .await
        .unwrap();
    let mut failed = call(30, Endpoint::Delete, &[&two, &one], 500);
    failed.error = Some("answered 500".into());
    failed.attempts = 3;
    failed.vercel_id = None;
    store.record_call(failed, Vec::new()).await.unwrap();

    let ledger = store.ledger(None).await.unwrap();
    let seen: Vec<(i64, Endpoint, Vec<String>, Option<u16>)> = ledger
        .iter()
        .map(|l| (l.at, l.endpoint, l.src_images.clone(), l.status))
        .collect();
    assert_eq!(
        seen,
        [
            (10, Endpoint::Delete, vec![one.clone()], Some(200)),
            (20, Endpoint::Invalidate, vec![two.clone()], Some(200)),
            (
                30,
                Endpoint::Delete,
                vec![two.clone(), one.clone()],
                Some(500)
            ),
        ]
    );
    let l = &ledger[0];
    assert_eq!(l.time, rfc3339(10));
    assert_eq!(l.project, "shop");
    assert_eq!(l.team_id.as_deref(), Some("team"));
    assert_eq!(l.slug.as_deref(), Some("slug"));
    assert_eq!(l.vercel_id.as_deref(), Some("id-10"));
    assert_eq!((l.error.as_deref(), l.attempts), (None, 1));
    let l = &ledger[2];
    assert_eq!(l.error.as_deref(), Some("answered 500"));
    assert_eq!((l.vercel_id.as_deref(), l.attempts), (None, 3));
    assert_eq!(store.ledger(Some(20)).await.unwrap().len(), 2);
    let for_two: Vec<i64> = store
        .calls_for(&two)
        .await
        .unwrap()
        .iter()
        .map(|l| l.at)
        .collect();
    assert_eq!(for_two, [20, 30]);
    assert_eq!(
        store
            .recently_called("w", Endpoint::Delete, 0)
            .await
            .unwrap(),
        vec![one.clone()]
    );
    assert_eq!(
        store
            .recently_called("w", Endpoint::Invalidate, 0)
            .await
            .unwrap(),
        vec![two.clone()]
    );
    assert!(
        store
            .recently_called("w", Endpoint::Delete, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let shown = store
        .show(Some("w"), std::slice::from_ref(&one))
        .await
        .unwrap();
    assert_eq!(shown.len(), 1, "only the source asked for");
    assert_eq!(
        shown[0].last_decision,
        Some(Decision::Purge),
        "the call's effect"
    );
    assert_eq!(shown[0].last_checked, None);

    store.pass_done("w", 1_700_000_500_000).await.unwrap();
    let shown = store
        .show(Some("w"), std::slice::from_ref(&two))
        .await
        .unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].src, two);
    assert_eq!(
        shown[0].last_checked.as_deref(),
        Some(rfc3339(1_700_000_500_000).as_str())
    );

    assert_eq!(store.discovered_at("w").await.unwrap(), None);
    let found = |src: &str| {
        (
            src.to_owned(),
            format!("https://origin.example{src}"),
            "https://site.example/".to_owned(),
        )
    };
    store
        .discovered("w", vec![found("/d1.png")], 40, true)
        .await
        .unwrap();
    assert_eq!(store.discovered_at("w").await.unwrap(), Some(40));
    store
        .discovered("w", vec![found("/d2.png")], 50, false)
        .await
        .unwrap();
    assert_eq!(store.discovered_at("w").await.unwrap(), Some(40));
    let mut sources = store.discovered_sources("w").await.unwrap();
    sources.sort();
    assert_eq!(
        sources,
        [
            ("/d1.png".into(), "https://origin.example/d1.png".into()),
            ("/d2.png".into(), "https://origin.example/d2.png".into()),
        ]
    );
    let d1 = store.show(Some("w"), &["/d1.png".into()]).await.unwrap();
    assert_eq!(
        d1[0].seen_in.as_deref(),
        Some("discovery: https://site.example/")
    );
    assert_eq!(store.show(None, &[]).await.unwrap().len(), 4);
}

/// `state forget` removes the named sources of the watch and counts only
/// those that were there; another watch's name forgets nothing. Leaves
/// `row(2)` stored.
pub(crate) async fn forgetting_counts_the_sources_that_were_there(store: &dyn Store) {
    store
        .write("w", vec![row(1), row(2), row(3)], Vec::new())
        .await
        .unwrap();
    let named = [
        row(1).src.to_string(),
        "/nowhere.png".into(),
        row(3).src.to_string(),
    ];
    assert_eq!(store.forget("w", &named).await.unwrap(), 2);
    assert_eq!(
        store
            .forget("other", &[row(2).src.to_string()])
            .await
            .unwrap(),
        0
    );
    let left: Vec<String> = store
        .show(None, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.src)
        .collect();
    assert_eq!(left, [row(2).src.to_string()]);
}

pub(crate) fn history(src: &str, at: Millis, decision: Decision, reason: &str) -> HistoryRow {
    HistoryRow {
        at,
        time: rfc3339(at),
        src: Arc::from(src),
        decision,
        status: Some(404),
        reason: reason.into(),
    }
}

/// A row as the pass keeps it: every field and each kind of value.
pub(crate) fn full_row() -> RowWrite {
    let stored = Validators {
        etag: Some("\"e\"".into()),
        last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
        length: Some(123),
    };
    let candidate = Validators {
        etag: Some("\"c\"".into()),
        last_modified: None,
        length: Some(456),
    };
    let mut w = row(1);
    w.rec.last_verdict = Some(Verdict::Gone);
    w.rec.last_status = Some(404);
    w.rec.last_decision = Some(Decision::Purge);
    w.rec.episode = Some(Box::new(Episode {
        gone_streak: 3,
        first_gone: from_millis(1_700_000_100_000),
        last_gone: from_millis(1_700_000_200_000),
        last_status: Some(410),
        purged_at: Some(from_millis(1_700_000_300_000)),
    }));
    w.rec.validators_all = stored.all();
    w.rec.validators_identity = stored.identity();
    w.rec.candidate = candidate.identity();
    w.rec.candidate_streak = 2;
    w.validators = Some(stored);
    w.candidate = Some(Some(candidate));
    w
}

/// What a pass writes reads back the same: the record a pass loads, the
/// row `state show` prints, the history; history alone and rows alone are
/// written too.
pub(crate) async fn a_row_reads_back_as_it_was_written(store: &dyn Store) {
    let w = full_row();
    let h = history(
        &w.src,
        1_700_000_300_000,
        Decision::Purge,
        "gone on 3 passes",
    );
    store
        .write("w", vec![w.clone()], vec![h.clone()])
        .await
        .unwrap();
    let loaded = store
        .load("w", Arc::new(vec![w.src.clone()]), 0)
        .await
        .unwrap();
    assert_eq!(loaded.recs[0].as_ref(), Some(&w.rec));

    let shown = store.show(Some("w"), &[]).await.unwrap();
    assert_eq!(shown.len(), 1);
    let r = &shown[0];
    assert_eq!((r.watch.as_str(), r.src.as_str()), ("w", &*w.src));
    assert_eq!(r.probe, w.probe);
    assert!(r.referenced);
    assert_eq!(r.unreferenced_since, None);
    assert_eq!(r.first_seen, rfc3339(1_700_000_000_000));
    assert_eq!(r.seen_in.as_deref(), Some("images.txt"));
    assert_eq!(r.last_verdict, Some(Verdict::Gone));
    assert_eq!(r.last_status, Some(404));
    assert_eq!(r.last_decision, Some(Decision::Purge));
    assert_eq!(r.gone_streak, 3);
    assert_eq!(
        r.gone_since.as_deref(),
        Some(rfc3339(1_700_000_100_000).as_str())
    );
    assert!(r.purged);
    assert_eq!(
        r.purged_at.as_deref(),
        Some(rfc3339(1_700_000_300_000).as_str())
    );
    assert_eq!(r.etag.as_deref(), Some("\"e\""));
    assert_eq!(
        r.last_modified.as_deref(),
        Some("Tue, 01 Dec 2026 10:00:00 GMT")
    );
    assert_eq!(r.content_length, Some(123));

    let hs = store.history("w", &w.src).await.unwrap();
    assert_eq!(hs.len(), 1);
    assert_eq!(
        (
            hs[0].at,
            hs[0].decision,
            hs[0].status,
            hs[0].reason.as_str()
        ),
        (h.at, Decision::Purge, Some(404), "gone on 3 passes")
    );

    // History alone, and rows alone, are written too.
    let later = history(&w.src, 1_700_000_400_000, Decision::AlreadyPurged, "again");
    store.write("w", Vec::new(), vec![later]).await.unwrap();
    assert_eq!(store.history("w", &w.src).await.unwrap().len(), 2);
    store.write("w", vec![row(2)], Vec::new()).await.unwrap();
    assert_eq!(store.show(None, &[]).await.unwrap().len(), 2);
}

/// A source unreferenced since before `forget_before` with nothing
/// pending is forgotten by the writer's load; a reader's load counts it
/// but leaves the store alone. `reader` reads what `writer` writes.
pub(crate) async fn only_the_writer_deletes_what_a_load_forgets(
    writer: &dyn Store,
    reader: &dyn Store,
) {
    let mut old = row(1);
    old.rec = Rec::new(1_000, false);
    old.rec.last_verdict = Some(Verdict::Present);
    writer
        .write("w", vec![old, row(2)], Vec::new())
        .await
        .unwrap();
    let listed = Arc::new(vec![row(2).src]);
    let loaded = reader.load("w", listed.clone(), 2_000).await.unwrap();
    assert_eq!(loaded.forgotten, 1);
    assert!(loaded.recs[0].is_some());
    assert_eq!(reader.show(None, &[]).await.unwrap().len(), 2);

    let loaded = writer.load("w", listed.clone(), 2_000).await.unwrap();
    assert_eq!(loaded.forgotten, 1);
    let left = writer.show(None, &[]).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].src, *row(2).src);
    let loaded = writer.load("w", listed, 2_000).await.unwrap();
    assert_eq!(loaded.forgotten, 0);
}

/// Asserts that a store refused a write as read-only; `what` names the write.
pub(crate) fn read_only<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::ReadOnly { .. }) => {}
        other => panic!("{what}: {other:?}"),
    }
}
