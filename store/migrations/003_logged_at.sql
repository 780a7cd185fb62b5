-- When the store received a lesson (the pair builder's watermark: a lesson finished before an
-- earlier build but flushed after it is still picked up).
ALTER TABLE lessons ADD COLUMN logged_at TIMESTAMPTZ DEFAULT now();
