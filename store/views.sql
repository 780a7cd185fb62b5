-- Views over the log, recreated whenever the schema version changes. They live in the database
-- file, so the plain `duckdb` CLI and any other DuckDB client see the same views.

-- Every message once. The writer never stores a message id twice, but `messages` has no key
-- (a lake cannot have one, and anyone can INSERT into the file), so every view below reads
-- this: a row that slips in twice is counted once. Rows with the same id are the same message.
CREATE OR REPLACE VIEW unique_messages AS
SELECT DISTINCT ON (message_id) * FROM messages;

-- Every message, readable, in dialogue order.
CREATE OR REPLACE VIEW transcript AS
SELECT run_id, lesson_id, turn, sender, kind, topic, difficulty, attempt, text,
       final_answer, correct, error_category, strategy, model, created_at, message_id, question_id
FROM unique_messages
ORDER BY lesson_id, turn;

-- The table's columns from messages' JSON (the `payload`, an exact round trip of the typed
-- message): the writer flattens a batch with it in one pass, and a user can load messages
-- from anywhere they have the JSON. topic and difficulty come from the question each message
-- is about, which must be in the same relation (a lesson is always written whole).
CREATE OR REPLACE MACRO messages_from_payloads(payloads) AS TABLE
WITH parsed AS (
    SELECT payload, json_transform(payload, '{"message_id": "VARCHAR", "run_id": "VARCHAR",
        "lesson_id": "VARCHAR", "turn": "INTEGER", "kind": "VARCHAR", "sender": "VARCHAR",
        "created_at": "TIMESTAMPTZ", "text": "VARCHAR", "question_id": "VARCHAR",
        "topic": "VARCHAR", "difficulty": "INTEGER", "attempt": "INTEGER",
        "final_answer": "VARCHAR", "correct": "BOOLEAN", "score": "DOUBLE",
        "error_category": "VARCHAR", "strategy": "VARCHAR", "generation": {"model": "VARCHAR",
        "endpoint": "VARCHAR", "prompt_tokens": "INTEGER", "completion_tokens": "INTEGER",
        "latency_s": "DOUBLE"}}') AS m
    FROM query_table(payloads)),
flat AS (SELECT m.*, coalesce(m.question_id, m.message_id) AS about, payload FROM parsed)
SELECT f.message_id, f.run_id, f.lesson_id, f.turn, f.kind, f.sender, f.created_at, f.text,
       f.about AS question_id, q.topic, q.difficulty, f.attempt, f.final_answer, f.correct,
       f.score, f.error_category, f.strategy, f.generation.model AS model,
       f.generation.endpoint AS endpoint,
       coalesce(f.generation.prompt_tokens, 0) AS prompt_tokens,
       coalesce(f.generation.completion_tokens, 0) AS completion_tokens,
       coalesce(f.generation.latency_s, 0.0) AS latency_s, f.payload
FROM flat f JOIN flat q ON q.message_id = f.about AND q.kind = 'question';

-- One row per judged question: was it right first time, and in the end (after reteaching)?
-- The log's definition of "first try" and "final": the lessons table's counts, the carried
-- estimate and the summaries all read it. It is teachloop.records.outcome's, in SQL: a lesson
-- decides with that function while it runs (the live estimate moves before anything is logged),
-- and tests/test_lesson_graph.py checks both agree on every question of generated lessons. `leaked`: a reteach stated the reference answer, so
-- a right final answer may be copied; `correct_final_no_leaks` does not credit those.
-- A table macro over any relation of messages, so the writer can apply it to the batch it is
-- writing (the view below applies it to the whole log).
CREATE OR REPLACE MACRO question_outcomes_of(msgs) AS TABLE
SELECT run_id, lesson_id, question_id, topic, difficulty, asked_at, correct_first,
       correct_final, reteaches, leaked,
       correct_first OR (correct_final AND NOT leaked) AS correct_final_no_leaks
FROM (
    SELECT run_id, lesson_id, question_id, any_value(topic) AS topic,
           any_value(difficulty) AS difficulty,
           min(created_at) AS asked_at,
           bool_or(correct) FILTER (WHERE kind = 'critique' AND attempt = 0) AS correct_first,
           arg_max(correct, attempt) FILTER (WHERE kind = 'critique') AS correct_final,
           count(DISTINCT message_id) FILTER (WHERE kind = 'reteach') AS reteaches,
           coalesce(bool_or((payload ->> '$.leaked')::BOOLEAN) FILTER (WHERE kind = 'reteach'),
                    false) AS leaked
    FROM query_table(msgs)
    WHERE kind = 'critique' OR kind = 'reteach'
    GROUP BY run_id, lesson_id, question_id)
WHERE correct_first IS NOT NULL;

-- Duplicate rows change nothing here (every aggregate is idempotent or counts distinct ids),
-- so it reads `messages` itself: twice as fast at 1M messages as through `unique_messages`.
CREATE OR REPLACE VIEW question_outcomes AS SELECT * FROM question_outcomes_of('messages');

-- Per run and topic: first-try accuracy vs accuracy after reteach (with and without credit
-- for answers after a reteach that gave the answer away).
CREATE OR REPLACE VIEW topic_accuracy AS
SELECT run_id, topic, count(*) AS questions,
       avg(correct_first::INT) AS first_try_accuracy,
       avg(correct_final::INT) AS after_reteach_accuracy,
       avg(correct_final::INT) FILTER (WHERE NOT correct_first) AS reteach_fix_rate,
       avg(correct_final_no_leaks::INT) AS after_reteach_accuracy_no_leaks,
       count(*) FILTER (WHERE leaked) AS leaked_reteaches
FROM question_outcomes
GROUP BY run_id, topic;

-- Per run and topic: first-try correctness of the n-th question on that topic, with the running
-- accuracy so far and over the last 10 questions.
CREATE OR REPLACE VIEW learning_curve AS
SELECT run_id, topic,
       row_number() OVER w AS question_number,
       difficulty, correct_first,
       avg(correct_first::INT) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
           AS cumulative_accuracy,
       avg(correct_first::INT) OVER (w ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)
           AS rolling_accuracy_10
FROM question_outcomes
WINDOW w AS (PARTITION BY run_id, topic ORDER BY asked_at, question_id);

-- Per run, topic and reteach strategy: how often the answer right after it was correct.
CREATE OR REPLACE VIEW strategy_effectiveness AS
SELECT r.run_id, r.topic, r.strategy, count(*) AS reteaches,
       count(*) FILTER (WHERE c.correct) AS successes,
       avg(c.correct::INT) AS success_rate
FROM unique_messages r
JOIN unique_messages c
  ON c.question_id = r.question_id AND c.kind = 'critique' AND c.attempt = r.attempt
WHERE r.kind = 'reteach'
GROUP BY r.run_id, r.topic, r.strategy;

-- One row per run.
CREATE OR REPLACE VIEW run_summary AS
WITH q AS (
    SELECT run_id, count(*) AS questions,
           avg(correct_first::INT) AS first_try_accuracy,
           avg(correct_final::INT) AS after_reteach_accuracy,
           avg(correct_final::INT) FILTER (WHERE NOT correct_first) AS reteach_fix_rate,
           avg(correct_final_no_leaks::INT) AS after_reteach_accuracy_no_leaks,
           count(*) FILTER (WHERE leaked) AS leaked_reteaches
    FROM question_outcomes GROUP BY run_id),
l AS (
    SELECT run_id, count(*) AS lessons,
           count(*) FILTER (WHERE status <> 'complete') AS lessons_failed
    FROM lessons GROUP BY run_id),
m AS (
    SELECT run_id, count(*) AS messages,
           sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
    FROM (SELECT DISTINCT message_id, run_id, prompt_tokens, completion_tokens FROM messages)
    GROUP BY run_id)
SELECT r.run_id, r.status, r.started_at, r.finished_at, r.student_model, r.teacher_model,
       r.lessons_planned, coalesce(l.lessons, 0) AS lessons,
       coalesce(l.lessons_failed, 0) AS lessons_failed,
       coalesce(q.questions, 0) AS questions, q.first_try_accuracy, q.after_reteach_accuracy,
       q.reteach_fix_rate, q.after_reteach_accuracy_no_leaks,
       coalesce(q.leaked_reteaches, 0) AS leaked_reteaches, coalesce(m.messages, 0) AS messages,
       coalesce(m.prompt_tokens, 0) AS prompt_tokens,
       coalesce(m.completion_tokens, 0) AS completion_tokens
FROM runs r LEFT JOIN q USING (run_id) LEFT JOIN l USING (run_id) LEFT JOIN m USING (run_id);
