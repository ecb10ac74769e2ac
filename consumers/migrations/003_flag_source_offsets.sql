-- A health flag row remembers the Kafka record it was last written from, so that an older state
-- can never overwrite a newer one (a sink instance that was paused and resumed after another took
-- its partitions, or a second consumer group replaying the topic). Flags are keyed by flag_id, the
-- topic's message key, so every state of one flag comes from one partition, in offset order.
-- Rows written before this migration have no source and are updated by the next state.
ALTER TABLE health.cse_flags
    ADD COLUMN source_partition integer,
    ADD COLUMN source_offset    bigint;
