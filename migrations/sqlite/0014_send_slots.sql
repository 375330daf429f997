-- The rate limit of a notice channel (`[mail] max_per_second`), shared by every daemon on the
-- database: each send reserves the next free slot of its channel, one interval after the last.
CREATE TABLE send_slots (
    channel TEXT PRIMARY KEY,
    next_at BIGINT NOT NULL
);
