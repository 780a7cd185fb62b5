-- teachloop store, migration 9: the second experiment design (issue 29). Held-out answer texts
-- are kept; each seed's budget (and the oracle's weak topics) is fixed and stored before any
-- arm runs, so a resumed seed gives its remaining arms the same; every arm's training examples
-- are recorded (what it trained on, not what was asked); and the starting student's answers on
-- each seed's validation split (how weak topics are found, and the pre-teaching checked).
ALTER TABLE experiment_outcomes ADD COLUMN answer VARCHAR;

CREATE TABLE IF NOT EXISTS experiment_seeds (
    experiment  VARCHAR NOT NULL,
    seed        INTEGER NOT NULL,
    examples    INTEGER NOT NULL,        -- every trained arm's distinct examples on this seed
    weak_topics VARCHAR[] NOT NULL,      -- below the starting student's mean on validation
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (experiment, seed)
);

CREATE TABLE IF NOT EXISTS experiment_examples (
    experiment VARCHAR NOT NULL,
    seed       INTEGER NOT NULL,
    arm        VARCHAR NOT NULL,
    position   INTEGER NOT NULL,         -- order of training data: a budget n takes the first n
    topic      VARCHAR NOT NULL,
    difficulty INTEGER,                  -- NULL where the source does not say
    question   VARCHAR NOT NULL,
    completion VARCHAR NOT NULL,         -- the training target
    PRIMARY KEY (experiment, seed, arm, position)
);

CREATE TABLE IF NOT EXISTS experiment_validation (
    experiment     VARCHAR NOT NULL,
    seed           INTEGER NOT NULL,
    question_index INTEGER NOT NULL,
    topic          VARCHAR NOT NULL,
    difficulty     INTEGER NOT NULL,
    question       VARCHAR NOT NULL,
    answer         VARCHAR,
    correct        BOOLEAN NOT NULL,
    PRIMARY KEY (experiment, seed, question_index)
);
