//! Topic lifecycle: idempotent creation, conflicting settings, deletion of all a topic holds.

use super::*;

#[test]
fn creating_a_topic_again_with_the_same_settings_returns_the_same_record() {
    let h = Harness::memory();
    let settings = TopicSettings {
        max_messages: 10,
        ..TopicSettings::default()
    };
    let first = h.create_topic("t", settings.clone(), 100).unwrap();
    assert_eq!(
        (
            first.first_sequence,
            first.next_sequence,
            first.messages,
            first.bytes
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(first.created_at_ms, 100);
    h.publish_one(msg("t", "m", "x"), 150);
    let existing = h.topic_record("t").unwrap();
    let again = h.create_topic("t", settings, 200).unwrap();
    assert_eq!(again, existing);
    assert_eq!(again.created_at_ms, 100);
    assert_eq!(h.stored_sequences("t"), vec![1], "re-creating keeps the messages");
}

#[test]
fn creating_a_topic_again_with_other_settings_is_refused_and_changes_nothing() {
    let h = Harness::memory();
    let original = h.create_topic("t", TopicSettings::default(), 100).unwrap();
    let before = dump(h.store());
    let other = TopicSettings {
        max_messages: 5,
        ..TopicSettings::default()
    };
    let error = h.create_topic("t", other, 200).unwrap_err();
    assert_eq!(error.refusal, Refusal::AlreadyExists);
    assert_eq!(error.field, "name");
    assert_eq!(h.topic_record("t").unwrap(), original);
    assert_eq!(dump(h.store()), before);
}

#[test]
fn deleting_a_topic_removes_its_messages_dedup_entries_and_acks() {
    let h = Harness::memory();
    h.create_sub("s", sub_settings("t", StartPosition::Earliest), 0)
        .unwrap();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        h.publish_one(msg("t", id, "x"), 10 + i as u64);
    }
    h.publish_one(msg("keep", "a", "x"), 20);
    h.ack("s", vec![key("t", 1)]).0.unwrap();

    let (response, applied) = h.apply(Command::DeleteTopic {
        name: topic("t"),
        now_ms: 30,
    });
    assert_eq!(response, Response::Deleted(Ok(())));
    assert!(applied.contains(&Applied::TopicDeleted(topic("t"))));
    assert!(h.topic_record("t").is_none());
    assert!(h.stored_topic_record("t").is_none());
    assert!(h.stored_sequences("t").is_empty());
    assert!((1..=3).all(|s| h.message("t", s).is_none()));
    assert!(h.dedup_entry("t", "a").is_none());
    assert!(!h.reader.is_acked(&sub("s"), &key("t", 1)).unwrap());
    // Other topics are untouched.
    assert_eq!(h.stored_sequences("keep"), vec![1]);
    assert!(h.dedup_entry("keep", "a").is_some());

    // Publishing again creates a new topic from sequence 1; old ids are forgotten.
    let again = h.publish_one(msg("t", "a", "y"), 40);
    assert_eq!((again.sequence, again.duplicate), (1, false));
    assert_eq!(
        h.pending("s", "t"),
        vec![1],
        "the old ack does not hide the new message"
    );
}

#[test]
fn deleting_an_unknown_topic_is_not_found() {
    let h = Harness::memory();
    let before = dump(h.store());
    let error = h.delete_topic("nope", 1).unwrap_err();
    assert_eq!((error.refusal, error.field.as_str()), (Refusal::NotFound, "name"));
    assert_eq!(dump(h.store()), before);
}
