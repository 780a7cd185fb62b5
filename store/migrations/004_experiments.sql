-- teachloop store, migration 4: experiments (`teachloop experiment`). One row per experiment,
-- one per (seed, arm) result with the budget it spent, one per held-out question answered.
CREATE TABLE IF NOT EXISTS experiments (
    experiment VARCHAR PRIMARY KEY,
    config     JSON NOT NULL,            -- the design: the run config without the seeds
    seeds      INTEGER[] NOT NULL,       -- every seed asked for so far
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS experiment_arms (
    experiment     VARCHAR NOT NULL,
    seed           INTEGER NOT NULL,
    arm            VARCHAR NOT NULL,
    data           VARCHAR NOT NULL,     -- none | uniform | selective
    method         VARCHAR,              -- sft | dpo | sft_then_dpo | kd; NULL: not trained
    examples       INTEGER NOT NULL,     -- distinct training examples
    steps          INTEGER NOT NULL,     -- optimizer steps
    teacher_tokens BIGINT NOT NULL,      -- tokens the teacher generated making the data
    data_wall_s    DOUBLE NOT NULL,      -- lessons that made the data
    train_wall_s   DOUBLE NOT NULL,
    eval_wall_s    DOUBLE NOT NULL,
    questions      INTEGER NOT NULL,
    correct        INTEGER NOT NULL,
    adapter_path   VARCHAR,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (experiment, seed, arm)
);

CREATE TABLE IF NOT EXISTS experiment_outcomes (
    experiment     VARCHAR NOT NULL,
    seed           INTEGER NOT NULL,
    arm            VARCHAR NOT NULL,
    question_index INTEGER NOT NULL,     -- position in the held-out set: pairs arms' answers
    topic          VARCHAR NOT NULL,
    difficulty     INTEGER NOT NULL,
    question       VARCHAR NOT NULL,
    correct        BOOLEAN NOT NULL,
    PRIMARY KEY (experiment, seed, arm, question_index)
);
