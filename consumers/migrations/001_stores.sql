-- The two case stores, each in its own schema with its own role, and the shared access log.
-- Roles are created NOLOGIN here; the deployment grants LOGIN and passwords (see README).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hub_store') THEN
        CREATE ROLE hub_store LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'health_store') THEN
        CREATE ROLE health_store LOGIN;
    END IF;
END
$$;

CREATE SCHEMA hub;
CREATE SCHEMA health;
CREATE SCHEMA audit;

-- Hub case store: the CSE tracker.
CREATE TABLE hub.alert_flags (
    alert_id            text PRIMARY KEY,
    rule                text NOT NULL,
    subject_kind        text NOT NULL,
    subject             text NOT NULL,
    area                text NOT NULL,
    severity            text NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    evidence            text[] NOT NULL,
    raised_at           timestamptz NOT NULL,
    settings            jsonb NOT NULL,
    handling_conditions text[] NOT NULL DEFAULT '{}',
    resolves            text,
    triage_status       text NOT NULL DEFAULT 'new'
                        CHECK (triage_status IN ('new', 'acknowledged', 'actioned', 'closed')),
    owner               text,
    received_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_flags_status ON hub.alert_flags (triage_status, raised_at);
CREATE INDEX alert_flags_subject ON hub.alert_flags (subject);

CREATE TABLE hub.alert_flag_history (
    id          bigserial PRIMARY KEY,
    alert_id    text NOT NULL REFERENCES hub.alert_flags (alert_id),
    from_status text,
    to_status   text NOT NULL,
    actor       text NOT NULL,
    note        text,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hub.children (
    child_key        text PRIMARY KEY,
    nhs_number       text,
    case_status      text NOT NULL CHECK (case_status IN ('open', 'closed')),
    risk_level       text CHECK (risk_level IN ('low', 'medium', 'high')),
    owning_authority text,
    authority_phone  text,
    opened_at        timestamptz,
    closed_at        timestamptz,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE hub.decisions (
    event_id    text PRIMARY KEY,
    child_key   text NOT NULL,
    kind        text NOT NULL,
    risk_level  text,
    reason      text,
    decided_by  text NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX decisions_child ON hub.decisions (child_key, occurred_at);

-- Offsets are committed in the same transaction as the rows they produced (exactly once).
CREATE TABLE hub.consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

-- Health flag store: one CSE flag per child per SNOMED code, FHIR R4 Flag shaped.
CREATE TABLE health.cse_flags (
    flag_id          text PRIMARY KEY,
    nhs_number       text NOT NULL CHECK (nhs_number ~ '^[0-9]{10}$'),
    status           text NOT NULL CHECK (status IN ('active', 'inactive', 'entered-in-error')),
    code             text NOT NULL CHECK (code IN ('716565009', '713834002')),
    display          text NOT NULL,
    period_start     date NOT NULL,
    period_end       date,
    author           text NOT NULL,
    owning_authority text NOT NULL,
    contact_phone    text NOT NULL,
    status_reason    text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (nhs_number, code),
    CHECK (status = 'active' OR status_reason IS NOT NULL)
);

CREATE TABLE health.consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

-- Append-only access log (DPA 2018 s.62 style): who, when, why, what, to whom.
CREATE TABLE audit.access_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action IN ('write', 'read', 'disclose', 'erase')),
    purpose    text NOT NULL,
    store      text NOT NULL,
    record_ref text NOT NULL,
    recipient  text
);

CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.access_log is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.access_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

GRANT USAGE ON SCHEMA hub, audit TO hub_store;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA hub TO hub_store;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA hub TO hub_store;
GRANT USAGE ON SCHEMA health, audit TO health_store;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA health TO health_store;
GRANT INSERT ON audit.access_log TO hub_store, health_store;
GRANT USAGE ON SEQUENCE audit.access_log_id_seq TO hub_store, health_store;
REVOKE ALL ON SCHEMA hub FROM health_store;
