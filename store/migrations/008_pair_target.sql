-- What a pair's chosen completion trains toward: 'answer' (the bare answer after the prompt's
-- "Answer:") or 'solution' (the student showed its work: a worked solution ending in a line
-- "Answer: ..."). Pairs built before this migration were all answers.
ALTER TABLE preference_pairs ADD COLUMN target VARCHAR DEFAULT 'answer';
