-- Tables the training loop writes (issue 6 fills them): held-out evaluations, preference pairs
-- built from lessons, training jobs and the model versions they produce.
CREATE TABLE IF NOT EXISTS model_versions (
    version        VARCHAR PRIMARY KEY,          -- e.g. 'base', 'v0001'
    parent_version VARCHAR,
    method         VARCHAR,                      -- base | dpo | sft
    adapter_path   VARCHAR,                      -- LoRA adapter directory; NULL for the base model
    base_model     VARCHAR NOT NULL,
    job_id         VARCHAR,
    watermark      TIMESTAMPTZ,                  -- log data up to here was used
    promoted       BOOLEAN NOT NULL DEFAULT false,
    metrics        JSON,
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS training_jobs (
    job_id       VARCHAR PRIMARY KEY,
    method       VARCHAR NOT NULL,
    from_version VARCHAR,
    status       VARCHAR NOT NULL,               -- running | complete | failed
    pairs        INTEGER,
    config       JSON,
    log          JSON,                           -- per-step loss / reward margins
    error        VARCHAR,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS preference_pairs (
    pair_id     VARCHAR PRIMARY KEY,             -- hash of (prompt, chosen, rejected)
    run_id      VARCHAR NOT NULL,
    lesson_id   VARCHAR NOT NULL,
    question_id VARCHAR NOT NULL,
    topic       VARCHAR NOT NULL,
    prompt      VARCHAR NOT NULL,
    chosen      VARCHAR NOT NULL,
    rejected    VARCHAR NOT NULL,
    rule        VARCHAR NOT NULL,                -- which rule made it
    source_ids  VARCHAR[] NOT NULL,              -- provenance: message ids
    job_id      VARCHAR,                         -- the training job that consumed it
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS evaluations (
    eval_id     VARCHAR NOT NULL,
    version     VARCHAR NOT NULL,
    topic       VARCHAR NOT NULL,
    questions   INTEGER NOT NULL,
    correct     INTEGER NOT NULL,
    accuracy    DOUBLE NOT NULL,
    seed        INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (eval_id, topic)
);

