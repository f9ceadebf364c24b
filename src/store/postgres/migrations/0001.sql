-- Version 1: the store's sixteen tables (store::Table), each a key and a value compared as
-- bytes, and beside them in four tables the typed columns that src/service/schema declares,
-- for operators' queries (docs/POSTGRES.md). No column holds a patient's identifiers: the
-- patient columns are the keyed pseudonym (service::pseudonym).
CREATE TABLE rxgate.prescriptions (
    k bytea PRIMARY KEY, v bytea NOT NULL,
    id text NOT NULL, institution text NOT NULL, number text NOT NULL, state text NOT NULL,
    pharmacy text, issue_date date NOT NULL, usable_through date NOT NULL,
    received_at_ms bigint NOT NULL, accepted_at_ms bigint, patient_pseudonym bytea NOT NULL
);
CREATE INDEX prescriptions_by_institution ON rxgate.prescriptions (institution, issue_date);
CREATE INDEX prescriptions_by_state ON rxgate.prescriptions (state, usable_through);
CREATE TABLE rxgate.by_exchange (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.by_patient (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.by_number (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.documents (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.dispensings (
    k bytea PRIMARY KEY, v bytea NOT NULL,
    prescription_id text NOT NULL, record_number bigint NOT NULL, pharmacy text NOT NULL,
    dispensing_date date NOT NULL, is_final bigint NOT NULL, received_at_ms bigint NOT NULL
);
CREATE INDEX dispensings_by_pharmacy ON rxgate.dispensings (pharmacy, dispensing_date);
CREATE TABLE rxgate.audit (
    k bytea PRIMARY KEY, v bytea NOT NULL,
    writer bytea, sequence bigint, time_ms bigint NOT NULL, entry text NOT NULL,
    institution text, action text, outcome text, target text, patient_pseudonym bytea
);
CREATE INDEX audit_by_time ON rxgate.audit (time_ms);
CREATE INDEX audit_by_patient ON rxgate.audit (patient_pseudonym)
    WHERE patient_pseudonym IS NOT NULL;
CREATE TABLE rxgate.meta (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.medications (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.clinical (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.events (
    k bytea PRIMARY KEY, v bytea NOT NULL,
    sequence bigint NOT NULL, time_ms bigint NOT NULL, kind text NOT NULL,
    prescription_id text NOT NULL, institution text NOT NULL, pharmacy text, state text NOT NULL
);
CREATE INDEX events_by_time ON rxgate.events (time_ms);
CREATE TABLE rxgate.events_by_institution (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.intake (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.certificates (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.lockouts (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE rxgate.audit_chain (k bytea PRIMARY KEY, v bytea NOT NULL);
