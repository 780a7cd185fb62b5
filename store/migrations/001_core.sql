-- teachloop store, migration 1: the lesson log. Names here are a public format: keep them.
CREATE TABLE IF NOT EXISTS teachloop_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    run_id          VARCHAR PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    status          VARCHAR NOT NULL,      -- running | complete | interrupted | failed
    lessons_planned INTEGER NOT NULL,
    teacher_model   VARCHAR NOT NULL,
    student_model   VARCHAR NOT NULL,
    config          JSON NOT NULL
);

CREATE TABLE IF NOT EXISTS lessons (
    lesson_id             VARCHAR PRIMARY KEY,
    run_id                VARCHAR NOT NULL,
    lesson_index          INTEGER NOT NULL,
    status                VARCHAR NOT NULL,  -- complete | failed | interrupted
    end_reason            VARCHAR NOT NULL,  -- budget | mastered | error | interrupted
    questions             INTEGER NOT NULL,
    correct_first         INTEGER NOT NULL,
    correct_after_reteach INTEGER NOT NULL,
    error                 VARCHAR,
    started_at            TIMESTAMPTZ NOT NULL,
    finished_at           TIMESTAMPTZ NOT NULL
);

-- One row per message. `payload` is the full typed message as JSON (exact round trip);
-- the other columns flatten it for SQL. topic/difficulty are copied from the question onto
-- every message about it, so per-topic queries need no join.
CREATE TABLE IF NOT EXISTS messages (
    message_id        VARCHAR PRIMARY KEY,
    run_id            VARCHAR NOT NULL,
    lesson_id         VARCHAR NOT NULL,
    turn              INTEGER NOT NULL,
    kind              VARCHAR NOT NULL,  -- question | answer | critique | reteach
    sender            VARCHAR NOT NULL,  -- teacher | student
    created_at        TIMESTAMPTZ NOT NULL,
    text              VARCHAR NOT NULL,
    question_id       VARCHAR NOT NULL,  -- the question this message is about (itself for questions)
    topic             VARCHAR NOT NULL,
    difficulty        INTEGER NOT NULL,
    attempt           INTEGER,           -- answers, critiques, reteaches
    final_answer      VARCHAR,           -- answers
    correct           BOOLEAN,           -- critiques
    score             DOUBLE,            -- critiques
    error_category    VARCHAR,           -- critiques
    strategy          VARCHAR,           -- reteaches
    model             VARCHAR,
    endpoint          VARCHAR,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s         DOUBLE NOT NULL,
    payload           JSON NOT NULL
);

-- The teacher's estimate of one topic after each question.
CREATE TABLE IF NOT EXISTS mastery (
    run_id         VARCHAR NOT NULL,
    lesson_id      VARCHAR NOT NULL,
    question_index INTEGER NOT NULL,
    topic          VARCHAR NOT NULL,
    alpha          DOUBLE NOT NULL,
    beta           DOUBLE NOT NULL,
    mean           DOUBLE NOT NULL,
    difficulty     INTEGER NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (lesson_id, question_index)
);
