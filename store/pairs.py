"""Preference pairs from the log, built in SQL.

For each question a student got wrong on the first try:
  prompt   = the prompt the student saw for that first answer (no reteach in it),
  rejected = that wrong first answer,
  chosen   = its own later answer, if the verifier accepted it   (rule ``self_corrected``;
             ``self_corrected_leaked`` if the reteach before it stated the answer),
             else the reference in the student's format          (rule ``reference``): the
             bare answer, or for a student that showed its work (``Answer.shown_work``) the
             question's worked solution. ``target`` records which ('answer', 'solution').
An answer is paired with its verdict by the critique's ``answer_id``.
Pairs are deduplicated (id = hash of prompt, chosen, rejected), pairs whose chosen and rejected
answers are the same answer are dropped, and each keeps its provenance (message ids).

Two definitions are the core's, not SQL's: how a completion follows its prompt
(``teachloop.messages.as_completion``) and when two answers are the same
(``teachloop.answers.answers_match``). The SQL calls them as DuckDB Python functions
(``student_completion``, ``same_answer``), registered on the connection that builds pairs.
Building is incremental: a watermark over ``lessons.logged_at`` records what was consumed.
A training job consumes pairs (``ModelRegistry.complete_job`` sets their ``job_id``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import duckdb
from duckdb.sqltypes import BOOLEAN, VARCHAR

from teachloop.answers import answers_match
from teachloop.messages import as_completion
from teachloop.store.base import Connected, Connection, insert_new_sql, set_meta
from teachloop.store.records import PairBuild, PreferencePair

WATERMARK_KEY = "pairs_watermark"
RULES = ("self_corrected", "reference", "self_corrected_leaked")
# A right answer after a reteach that stated the reference answer may be copied, not learned:
# such pairs are built and tagged, and training leaves them out unless asked.
TRAINED_RULES = ("self_corrected", "reference")
TARGETS = ("answer", "solution")

# The pairs of the lessons in `scope` (a CTE the caller defines before these).
_PAIRS = """
answers AS (
    SELECT a.run_id, a.lesson_id, a.question_id, a.topic, a.attempt, a.message_id, a.text,
           a.final_answer, a.payload ->> '$.prompt' AS prompt, c.correct,
           coalesce((a.payload ->> '$.shown_work')::BOOLEAN, false) AS shown_work
    FROM unique_messages a
    JOIN unique_messages c
      ON c.kind = 'critique' AND (c.payload ->> '$.answer_id') = a.message_id
         AND c.lesson_id IN (SELECT lesson_id FROM scope)
    WHERE a.kind = 'answer' AND a.lesson_id IN (SELECT lesson_id FROM scope)),
corrected AS (
    SELECT question_id, min(attempt) AS attempt, arg_min(message_id, attempt) AS message_id,
           arg_min(text, attempt) AS text, arg_min(final_answer, attempt) AS final_answer
    FROM answers WHERE attempt > 0 AND correct GROUP BY question_id),
reteaches AS (
    SELECT question_id, attempt, coalesce((payload ->> '$.leaked')::BOOLEAN, false) AS leaked
    FROM unique_messages
    WHERE kind = 'reteach' AND lesson_id IN (SELECT lesson_id FROM scope)),
candidates AS (
    SELECT w.run_id, w.lesson_id, w.question_id, w.topic, w.prompt,
           -- The reference in the student's form: a question's solution is the problem's
           -- worked solution (``Problem.worked_solution``, never empty).
           student_completion(
               coalesce(c.text, CASE WHEN w.shown_work THEN q.payload ->> '$.solution'
                                     ELSE q.payload ->> '$.reference_answer' END),
               w.shown_work) AS chosen,
           student_completion(w.text, w.shown_work) AS rejected,
           CASE WHEN w.shown_work THEN 'solution' ELSE 'answer' END AS target,
           coalesce(c.final_answer, q.payload ->> '$.reference_answer') AS chosen_answer,
           w.final_answer AS rejected_answer,
           CASE WHEN c.message_id IS NULL THEN 'reference'
                WHEN r.leaked THEN 'self_corrected_leaked'
                ELSE 'self_corrected' END AS rule,
           list_filter([w.question_id, w.message_id, c.message_id], x -> x IS NOT NULL)
               AS source_ids
    FROM answers w
    JOIN unique_messages q ON q.message_id = w.question_id
    LEFT JOIN corrected c ON c.question_id = w.question_id
    LEFT JOIN reteaches r ON r.question_id = c.question_id AND r.attempt = c.attempt
    WHERE w.attempt = 0 AND NOT w.correct),
pairs AS (
    SELECT md5(prompt || chr(0) || chosen || chr(0) || rejected) AS pair_id,
           run_id, lesson_id, question_id, topic, prompt, chosen, rejected, rule, source_ids,
           NULL::VARCHAR AS job_id, now() AS created_at, target
    FROM candidates
    -- drop pairs whose answers are the same answer ("8" vs "8.0", a judge's flip-flop)
    WHERE NOT same_answer(chosen_answer, rejected_answer) AND trim(chosen) <> trim(rejected)
    QUALIFY row_number() OVER (PARTITION BY pair_id ORDER BY lesson_id, question_id) = 1)
"""

_BUILD = (
    """
WITH scope AS (
    SELECT lesson_id FROM lessons
    WHERE status = 'complete' AND logged_at > $watermark::TIMESTAMPTZ
      AND logged_at <= $upto::TIMESTAMPTZ),
"""
    + _PAIRS
    + insert_new_sql("preference_pairs", "pairs")
)

_OF_RUN = (
    """
WITH scope AS (SELECT lesson_id FROM lessons WHERE run_id = $run AND status = 'complete'),
"""
    + _PAIRS
    + """
SELECT p.* FROM pairs p JOIN lessons l USING (lesson_id)
WHERE p.rule IN (SELECT unnest($rules))
ORDER BY l.lesson_index, p.question_id
"""
)


def _same_answer(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and answers_match(a, b)


# (name, function, parameter types, return type, whether it is called with NULLs). A NULL
# completion stays NULL (a question logged without its solution): the pair is then dropped.
_FUNCTIONS = (
    ("student_completion", as_completion, [VARCHAR, BOOLEAN], VARCHAR, "default"),
    ("same_answer", _same_answer, [VARCHAR, VARCHAR], BOOLEAN, "special"),
)


def _with_core_functions(con: Connection) -> Connection:
    """``con`` with the pair SQL's Python functions. DuckDB keeps them per open database, not
    per connection: a second connection to the same open database finds them there."""
    for name, function, parameters, returns, nulls in _FUNCTIONS:
        # Already there when an earlier connection to this open database registered it.
        with contextlib.suppress(duckdb.CatalogException):
            con.create_function(name, function, parameters, returns, null_handling=nulls)
    return con


class PairBuilder(Connected):
    def build_pairs(self) -> PairBuild:
        """Turn the lessons logged since the last build into preference pairs, in one
        transaction (pairs and the moved watermark commit together, or neither does)."""
        with self.connect() as con:
            _with_core_functions(con)
            con.execute("BEGIN")
            row = con.execute(
                "SELECT value FROM teachloop_meta WHERE key = ?", [WATERMARK_KEY]
            ).fetchone()
            watermark = row[0] if row else "-infinity"
            upto = con.execute("SELECT max(logged_at)::VARCHAR FROM lessons").fetchone()[0]
            lessons = 0
            if upto is not None:
                params = {"watermark": watermark, "upto": upto}
                lessons = con.execute(
                    "SELECT count(*) FROM lessons WHERE status = 'complete' "
                    "AND logged_at > $watermark::TIMESTAMPTZ AND logged_at <= $upto::TIMESTAMPTZ",
                    params,
                ).fetchone()[0]
                before = dict(
                    con.execute(
                        "SELECT rule, count(*) FROM preference_pairs GROUP BY rule"
                    ).fetchall()
                )
                con.execute(_BUILD, params)
                after = dict(
                    con.execute(
                        "SELECT rule, count(*) FROM preference_pairs GROUP BY rule"
                    ).fetchall()
                )
                set_meta(con, WATERMARK_KEY, upto)
            else:
                before = after = {}
            unused = con.execute(
                "SELECT count(*) FROM preference_pairs WHERE job_id IS NULL"
            ).fetchone()[0]
            con.execute("COMMIT")
        return PairBuild(
            lessons=lessons,
            added={rule: after.get(rule, 0) - before.get(rule, 0) for rule in RULES},
            unused=unused,
        )

    def unused_pairs(
        self, rules: Sequence[str] = TRAINED_RULES, targets: Sequence[str] = TARGETS
    ) -> list[PreferencePair]:
        """Pairs of these rules and targets no completed training job has consumed yet, oldest
        first."""
        rows = self.query(
            "SELECT * FROM preference_pairs WHERE job_id IS NULL AND rule IN (SELECT unnest(?)) "
            "AND target IN (SELECT unnest(?)) ORDER BY created_at, pair_id",
            [list(rules), list(targets)],
        ).to_pylist()
        return [PreferencePair.model_validate(r) for r in rows]

    def run_pairs(self, run_id: str, rules: Sequence[str] = TRAINED_RULES) -> list[PreferencePair]:
        """The pairs one run's complete lessons give, in lesson order, built exactly as
        ``build_pairs`` builds them but not recorded (no watermark moves, nothing is
        consumed): experiments train on one run's data without touching the training queue."""
        with self.connect(read_only=True) as con:
            params = {"run": run_id, "rules": list(rules)}
            rows = _with_core_functions(con).execute(_OF_RUN, params).to_arrow_table().to_pylist()
        return [PreferencePair.model_validate(r) for r in rows]
