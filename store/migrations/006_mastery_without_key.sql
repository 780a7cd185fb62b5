-- teachloop store, migration 6: `mastery` without a PRIMARY KEY, for the reason of migration 5:
-- the writer inserts only (lesson_id, question_index) pairs not yet present, under one writer
-- per store; checking them against an index cost ~15% of the write rate at 600k messages.
CREATE TABLE mastery_v6 (
    run_id         VARCHAR NOT NULL,
    lesson_id      VARCHAR NOT NULL,
    question_index INTEGER NOT NULL,
    topic          VARCHAR NOT NULL,
    alpha          DOUBLE NOT NULL,
    beta           DOUBLE NOT NULL,
    mean           DOUBLE NOT NULL,
    difficulty     INTEGER NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
INSERT INTO mastery_v6 SELECT * FROM mastery ORDER BY lesson_id, question_index;
DROP TABLE mastery;
ALTER TABLE mastery_v6 RENAME TO mastery;
