-- teachloop store, migration 5: `messages` without a PRIMARY KEY. Uniqueness of message_id
-- holds by design instead: the writer inserts only ids not yet present (an anti-join, under one
-- writer per store), which is 1.3-1.7x faster than checking an ART index per row, and is the
-- only way a lake without keys (DuckLake) can hold it too. Same columns, same order.
CREATE TABLE messages_v5 (
    message_id        VARCHAR NOT NULL,
    run_id            VARCHAR NOT NULL,
    lesson_id         VARCHAR NOT NULL,
    turn              INTEGER NOT NULL,
    kind              VARCHAR NOT NULL,
    sender            VARCHAR NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    text              VARCHAR NOT NULL,
    question_id       VARCHAR NOT NULL,
    topic             VARCHAR NOT NULL,
    difficulty        INTEGER NOT NULL,
    attempt           INTEGER,
    final_answer      VARCHAR,
    correct           BOOLEAN,
    score             DOUBLE,
    error_category    VARCHAR,
    strategy          VARCHAR,
    model             VARCHAR,
    endpoint          VARCHAR,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s         DOUBLE NOT NULL,
    payload           JSON NOT NULL
);
INSERT INTO messages_v5 SELECT * FROM messages ORDER BY lesson_id, turn;
DROP TABLE messages;
ALTER TABLE messages_v5 RENAME TO messages;
