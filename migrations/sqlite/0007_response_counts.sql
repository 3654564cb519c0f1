-- How many responses are stored, kept beside them so the bound (`max_stored_responses`) is
-- checked without counting every row on each write (a count is linear in the rows, and on
-- PostgreSQL also in the dead rows the evictions leave). Sixteen rows summed: writers on
-- several replicas each update their response's own row instead of queueing on one.
CREATE TABLE response_counts (
    shard  INTEGER PRIMARY KEY,
    stored BIGINT NOT NULL
);
INSERT INTO response_counts (shard, stored) SELECT 0, COUNT(*) FROM responses;
INSERT INTO response_counts (shard, stored) VALUES
    (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0),
    (9, 0), (10, 0), (11, 0), (12, 0), (13, 0), (14, 0), (15, 0);
