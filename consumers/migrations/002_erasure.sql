-- CSE records are retained. Erasing one needs a person holding the cse_eraser role and a stated
-- reason, and the erasure is itself logged (append-only). Nobody gets DELETE on the tables.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cse_eraser') THEN
        CREATE ROLE cse_eraser NOLOGIN;
    END IF;
END
$$;

CREATE FUNCTION hub.erase_alert(p_alert_id text, p_reason text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hub, audit AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'cse_eraser', 'MEMBER') THEN
        RAISE EXCEPTION 'erasing a CSE record needs the cse_eraser role; % does not hold it', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_reason IS NULL OR length(trim(p_reason)) < 10 THEN
        RAISE EXCEPTION 'erasing a CSE record needs a stated reason (at least 10 characters), got %',
            quote_nullable(p_reason) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM hub.alert_flag_history WHERE alert_id = p_alert_id;
    DELETE FROM hub.alert_flags WHERE alert_id = p_alert_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with alert_id %', quote_literal(p_alert_id) USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO audit.access_log (actor, action, purpose, store, record_ref)
        VALUES (session_user, 'erase', p_reason, 'hub', p_alert_id);
END
$$;

REVOKE ALL ON FUNCTION hub.erase_alert(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hub.erase_alert(text, text) TO hub_store, cse_eraser;
GRANT USAGE ON SCHEMA hub TO cse_eraser;
