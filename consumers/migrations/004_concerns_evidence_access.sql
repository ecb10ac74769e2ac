-- The hub's workplace: concerns (one per subject and rule), the evidence the pages show, and
-- access by owning authority enforced here, with row-level security, not only in the app.
--
-- Who is who (all NOLOGIN but hub_web, whose password the deployment sets):
--   hub_web                  the web application's login role. NOINHERIT: it holds no rights of
--                            its own and sees nothing until it SETs ROLE, per request, to the
--                            role of the person signed in.
--   hub_authority_<code>     a practitioner of one local authority: that authority's rows only.
--   hub_manager              a manager of the sub-regional hub: every authority's rows.
--   hub_analyst              reads every authority's concerns and evidence; changes nothing.
--   hub_auditor              reads the access log; nothing else.
--   hub_practitioner         the rights a practitioner or manager holds (group role).

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['hub_web', 'hub_practitioner', 'hub_manager', 'hub_analyst', 'hub_auditor',
                             'hub_authority_e06000016', 'hub_authority_e10000018', 'hub_authority_e06000017']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
ALTER ROLE hub_web NOINHERIT;
GRANT hub_practitioner TO hub_manager, hub_authority_e06000016, hub_authority_e10000018, hub_authority_e06000017;
GRANT hub_manager, hub_analyst, hub_auditor, hub_authority_e06000016, hub_authority_e10000018,
      hub_authority_e06000017 TO hub_web;

CREATE TABLE hub.authorities (
    code    text PRIMARY KEY,
    name    text NOT NULL UNIQUE,
    phone   text NOT NULL,
    db_role text NOT NULL UNIQUE
);
INSERT INTO hub.authorities (code, name, phone, db_role) VALUES
    ('E06000016', 'Leicester City Council', '0116 496 0100', 'hub_authority_e06000016'),
    ('E10000018', 'Leicestershire County Council', '0116 496 0200', 'hub_authority_e10000018'),
    ('E06000017', 'Rutland County Council', '01632 960 300', 'hub_authority_e06000017');

-- One concern per rule and subject; its alerts are the alert flags that name it.
CREATE TABLE hub.concerns (
    concern_id         text PRIMARY KEY,
    rule               text NOT NULL,
    subject_kind       text NOT NULL,
    subject            text NOT NULL,
    authority          text NOT NULL,
    severity           text NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    status             text NOT NULL DEFAULT 'new'
                       CHECK (status IN ('new', 'acknowledged', 'actioned', 'closed')),
    owner              text,
    opened_at          timestamptz NOT NULL,
    last_change_at     timestamptz NOT NULL,
    closed_at          timestamptz,
    close_reason       text,
    alert_count        integer NOT NULL,
    evidence           text[] NOT NULL,
    evidence_count     integer GENERATED ALWAYS AS (cardinality(evidence)) STORED,
    severity_rank      smallint GENERATED ALWAYS AS (CASE severity WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END) STORED,
    latest_evidence_at timestamptz NOT NULL,
    UNIQUE (rule, subject_kind, subject),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (status <> 'closed' OR close_reason IS NOT NULL)
);
-- The queue's orders, each ending in the key so that a page is read straight off the index, its
-- filters (status, severity, reason, authority, and the row-level security) checked on the way.
CREATE INDEX concerns_by_change ON hub.concerns (last_change_at DESC, concern_id);
CREATE INDEX concerns_by_age ON hub.concerns (opened_at, concern_id);
CREATE INDEX concerns_by_severity ON hub.concerns (severity_rank, last_change_at DESC, concern_id);
CREATE INDEX concerns_by_evidence ON hub.concerns (evidence_count DESC, concern_id);
CREATE INDEX concerns_subject ON hub.concerns (subject);

CREATE TABLE hub.concern_history (
    id          bigserial PRIMARY KEY,
    concern_id  text NOT NULL REFERENCES hub.concerns (concern_id),
    authority   text NOT NULL,
    action      text NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    alert_id    text,
    note        text
);
CREATE INDEX concern_history_concern ON hub.concern_history (concern_id, id);

ALTER TABLE hub.alert_flags ADD COLUMN concern_id text REFERENCES hub.concerns (concern_id);
CREATE INDEX alert_flags_concern ON hub.alert_flags (concern_id);

-- The agency events the pages show, as received: the narrative still sealed (decrypted only for
-- a person allowed to read it), identity as pseudonymous keys until the person register lands.
CREATE TABLE hub.evidence (
    event_id            text PRIMARY KEY,
    source              text NOT NULL CHECK (source IN ('intelligence', 'missing_episode')),
    kind                text NOT NULL,
    report_id           text,
    episode_id          text,
    occurred_at         timestamptz NOT NULL,
    reported_at         timestamptz NOT NULL,
    authority           text NOT NULL,
    agency              text NOT NULL,
    agency_type         text NOT NULL,
    children            text[] NOT NULL,
    detail              jsonb NOT NULL,
    narrative           text,
    handling_code       text,
    handling_conditions text
);
-- Which children each event is about, one row each: under row-level security only leakproof
-- operators may use an index, which text equality is and array containment (a GIN index on
-- evidence.children) is not, so a child's chronology is found through this table.
CREATE TABLE hub.evidence_children (
    child_key text NOT NULL,
    event_id  text NOT NULL REFERENCES hub.evidence (event_id),
    authority text NOT NULL,
    PRIMARY KEY (child_key, event_id)
);

ALTER TABLE hub.children ADD COLUMN authority text;
CREATE INDEX children_authority ON hub.children (authority);
ALTER TABLE hub.decisions ADD COLUMN authority text;

-- Which authorities' rows the current role may see (invoker's rights: current_user is the role
-- set for the request). Checked with USAGE, which follows only inherited membership: hub_web
-- itself (NOINHERIT) sees nothing.
CREATE FUNCTION hub.sees_every_authority() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, hub AS $$
    SELECT pg_has_role(current_user, 'hub_manager', 'USAGE')
        OR pg_has_role(current_user, 'hub_analyst', 'USAGE')
$$;
CREATE FUNCTION hub.my_authorities() RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, hub AS $$
    SELECT coalesce(array_agg(code), '{}') FROM hub.authorities WHERE pg_has_role(current_user, db_role, 'USAGE')
$$;

-- Each policy's functions are in sub-selects, so that they run once per statement, not per row.
CREATE POLICY by_authority ON hub.concerns
    USING ((SELECT hub.sees_every_authority()) OR authority IN (SELECT unnest(hub.my_authorities())));
CREATE POLICY by_authority ON hub.concern_history
    USING ((SELECT hub.sees_every_authority()) OR authority IN (SELECT unnest(hub.my_authorities())));
CREATE POLICY by_authority ON hub.alert_flags
    USING ((SELECT hub.sees_every_authority()) OR area IN (SELECT unnest(hub.my_authorities())));
CREATE POLICY by_authority ON hub.evidence
    USING ((SELECT hub.sees_every_authority()) OR authority IN (SELECT unnest(hub.my_authorities())));
CREATE POLICY by_authority ON hub.evidence_children
    USING ((SELECT hub.sees_every_authority()) OR authority IN (SELECT unnest(hub.my_authorities())));
CREATE POLICY by_authority ON hub.children
    USING ((SELECT hub.sees_every_authority()) OR authority IN (SELECT unnest(hub.my_authorities())));
CREATE POLICY by_authority ON hub.decisions
    USING ((SELECT hub.sees_every_authority()) OR authority IN (SELECT unnest(hub.my_authorities())));
-- The hub sink writes every authority's rows.
CREATE POLICY sink ON hub.concerns TO hub_store USING (true) WITH CHECK (true);
CREATE POLICY sink ON hub.concern_history TO hub_store USING (true) WITH CHECK (true);
CREATE POLICY sink ON hub.alert_flags TO hub_store USING (true) WITH CHECK (true);
CREATE POLICY sink ON hub.evidence TO hub_store USING (true) WITH CHECK (true);
CREATE POLICY sink ON hub.evidence_children TO hub_store USING (true) WITH CHECK (true);
CREATE POLICY sink ON hub.children TO hub_store USING (true) WITH CHECK (true);
CREATE POLICY sink ON hub.decisions TO hub_store USING (true) WITH CHECK (true);
ALTER TABLE hub.concerns ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub.concern_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub.alert_flags ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub.evidence ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub.evidence_children ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub.children ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub.decisions ENABLE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON hub.concerns, hub.concern_history, hub.evidence, hub.evidence_children TO hub_store;
GRANT USAGE ON SEQUENCE hub.concern_history_id_seq TO hub_store;
GRANT SELECT ON hub.authorities TO hub_store;
GRANT EXECUTE ON FUNCTION hub.sees_every_authority(), hub.my_authorities() TO hub_store;

GRANT USAGE ON SCHEMA hub, audit TO hub_practitioner, hub_analyst;
GRANT SELECT ON hub.concerns, hub.concern_history, hub.alert_flags, hub.evidence, hub.evidence_children, hub.children,
      hub.decisions, hub.authorities TO hub_practitioner, hub_analyst;
-- Triage: a person changes a concern's status and owner, never what the pipeline wrote (the
-- policies above also check the row is of an authority the person may see).
GRANT UPDATE (status, owner, last_change_at, closed_at, close_reason) ON hub.concerns TO hub_practitioner;
GRANT INSERT ON hub.concern_history TO hub_practitioner;
GRANT USAGE ON SEQUENCE hub.concern_history_id_seq TO hub_practitioner;
GRANT USAGE ON SCHEMA audit TO hub_auditor;
GRANT SELECT ON audit.access_log TO hub_auditor;
GRANT INSERT ON audit.access_log TO hub_practitioner, hub_analyst, hub_auditor;
GRANT USAGE ON SEQUENCE audit.access_log_id_seq TO hub_practitioner, hub_analyst, hub_auditor;
GRANT EXECUTE ON FUNCTION hub.sees_every_authority(), hub.my_authorities()
      TO hub_practitioner, hub_analyst, hub_auditor;

-- Whether a child or concern exists under another authority: lets a page refuse (403) rather than
-- claim there is nothing (404), without showing any of the row. Owner's rights, so past the
-- row-level security; it returns the owning authority's code and nothing else.
CREATE FUNCTION hub.authority_of(p_kind text, p_key text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, hub AS $$
    SELECT CASE p_kind
        WHEN 'concern' THEN (SELECT authority FROM hub.concerns WHERE concern_id = p_key)
        WHEN 'child' THEN coalesce(
            (SELECT authority FROM hub.children WHERE child_key = p_key),
            (SELECT authority FROM hub.concerns WHERE subject_kind = 'child' AND subject = p_key LIMIT 1),
            (SELECT authority FROM hub.evidence_children WHERE child_key = p_key LIMIT 1))
    END
$$;
REVOKE ALL ON FUNCTION hub.authority_of(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hub.authority_of(text, text) TO hub_practitioner, hub_analyst;
