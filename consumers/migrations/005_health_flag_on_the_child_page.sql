-- The child page shows the child's health flag and who in health has read it, as CP-IS tells the
-- owning authority of each look-up. Practitioners and managers see the flags of the children the
-- tracker shows them (row-level security on hub.children applies inside the policy), a few
-- columns only; the reads come through a function that checks the same.

GRANT USAGE ON SCHEMA health TO hub_practitioner;
GRANT SELECT (flag_id, nhs_number, status, code, display, period_start, period_end, status_reason,
              owning_authority, updated_at) ON health.cse_flags TO hub_practitioner;
CREATE POLICY sink ON health.cse_flags TO health_store USING (true) WITH CHECK (true);
CREATE POLICY tracked_children ON health.cse_flags TO hub_practitioner
    USING (nhs_number IN (SELECT c.nhs_number FROM hub.children c WHERE c.nhs_number IS NOT NULL));
ALTER TABLE health.cse_flags ENABLE ROW LEVEL SECURITY;

-- The access log is looked up by record; it grows with every write and read.
CREATE INDEX access_log_record ON audit.access_log (record_ref, id);

-- The last 25 reads in health of the flags of a child the calling role may see on the tracker.
-- Owner's rights to read the access log, so the caller's own role is taken from the `role`
-- setting (what the web application SET ROLE to), not current_user (the owner, in here).
CREATE FUNCTION hub.health_reads(p_nhs text) RETURNS TABLE (at timestamptz, actor text, purpose text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, hub, health, audit AS $$
DECLARE
    caller text := current_setting('role');
BEGIN
    IF caller = 'none' OR NOT EXISTS (
        SELECT 1 FROM hub.children c LEFT JOIN hub.authorities a ON a.code = c.authority
        WHERE c.nhs_number = p_nhs
          AND (pg_has_role(caller, 'hub_manager', 'USAGE')
               OR (a.db_role IS NOT NULL AND pg_has_role(caller, a.db_role, 'USAGE')))
    ) THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT l.at, l.actor, l.purpose FROM audit.access_log l
        WHERE l.action = 'read' AND l.store = 'health'
          AND l.record_ref IN (SELECT f.flag_id FROM health.cse_flags f WHERE f.nhs_number = p_nhs)
        ORDER BY l.id DESC LIMIT 25;
END
$$;
REVOKE ALL ON FUNCTION hub.health_reads(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hub.health_reads(text) TO hub_practitioner;
