-- rowgate: sealed identity. The database itself verifies that the identity
-- settings of a transaction were set by rowgate, not by the client.
--
-- rowgate (with [seal] configured) adds one more transaction-local setting,
-- rowgate.seal = 'v1:<names>:<hex HMAC-SHA256>', over the backend's process
-- id and every identity setting it injected (format: docs/security.md, "Seal
-- format"). The key is shared: rowgate reads it from [seal] key_file or
-- ROWGATE_SEAL_KEY; the database keeps it in rowgate_private.seal_key,
-- written by `rowgate migrate --seal-key-file FILE`.
--
-- auth.user_id(), auth.claims(), auth.org_id() and auth.setting(name) are
-- redefined as SECURITY DEFINER functions owned by rowgate_definer, a NOLOGIN
-- role nobody is granted, the only role that can read the key. When a key is
-- installed they return NULL unless the seal matches pg_backend_pid() and the
-- current settings: a client that sets app.user_id itself, by any route,
-- gets NULL, and RLS policies match nothing. With no key installed they
-- behave exactly as in 001_auth.sql, so unsealed deployments keep working.
--
-- Run as a superuser or as a role that may create roles (on Neon: the
-- project owner). Idempotent: safe to apply again. Needs 001_auth.sql.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rowgate_definer') THEN
        CREATE ROLE rowgate_definer NOLOGIN NOINHERIT;
    END IF;
    -- The administrator applying this must be able to hand objects to the
    -- definer (a superuser already can). No other role may be a member.
    IF NOT pg_has_role(current_user, 'rowgate_definer', 'MEMBER') THEN
        EXECUTE format('GRANT rowgate_definer TO %I', current_user);
    END IF;
    IF pg_has_role('rowgate_user', 'rowgate_definer', 'MEMBER') THEN
        RAISE EXCEPTION 'rowgate_user must not be a member of rowgate_definer: it could read the seal key'
            USING HINT = 'REVOKE rowgate_definer FROM the roles rowgate logs in as.';
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS rowgate_private AUTHORIZATION rowgate_definer;
ALTER SCHEMA rowgate_private OWNER TO rowgate_definer;
REVOKE ALL ON SCHEMA rowgate_private FROM PUBLIC;

-- One row at most: the key rowgate signs with.
CREATE TABLE IF NOT EXISTS rowgate_private.seal_key (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    key          bytea NOT NULL CHECK (octet_length(key) >= 32),
    installed_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE rowgate_private.seal_key OWNER TO rowgate_definer;
REVOKE ALL ON rowgate_private.seal_key FROM PUBLIC;

COMMENT ON TABLE rowgate_private.seal_key IS
    'The key rowgate seals identities with ([seal] in rowgate''s config). Readable only by rowgate_definer. No row: sealing is off and auth.* trust the settings as they are.';

-- The definer owns functions in auth; ALTER ... OWNER needs CREATE there.
GRANT USAGE, CREATE ON SCHEMA auth TO rowgate_definer;

-- A netstring: decimal byte length, ':', the UTF-8 bytes, ','.
CREATE OR REPLACE FUNCTION rowgate_private.netstring(x text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT convert_to(octet_length(convert_to(x, 'UTF8'))::text || ':', 'UTF8')
                 || convert_to(x, 'UTF8') || '\x2c'::bytea $$;
ALTER FUNCTION rowgate_private.netstring(text) OWNER TO rowgate_definer;
REVOKE ALL ON FUNCTION rowgate_private.netstring(text) FROM PUBLIC;

-- The verifier calls pgcrypto's hmac() by its schema, wherever the extension
-- was installed (public here, `extensions` on Supabase, ...).
DO $outer$
DECLARE
    crypto name := (SELECT n.nspname FROM pg_extension e
                    JOIN pg_namespace n ON n.oid = e.extnamespace
                    WHERE e.extname = 'pgcrypto');
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO rowgate_definer', crypto);
    EXECUTE format($fn$
CREATE OR REPLACE FUNCTION rowgate_private.verified_setting(setting text) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
    AS $body$
DECLARE
    k      bytea;
    seal   text;
    parts  text[];
    names  text[];
    n      text;
    v      text;
    msg    bytea;
BEGIN
    SELECT s.key INTO k FROM rowgate_private.seal_key s WHERE s.id;
    IF k IS NULL THEN
        -- Unsealed deployment: as 001_auth.sql.
        RETURN nullif(current_setting(setting, true), '');
    END IF;
    seal := current_setting('rowgate.seal', true);
    IF seal IS NULL THEN
        RETURN NULL;
    END IF;
    parts := regexp_match(seal, '^v1:([A-Za-z0-9_.,]*):([0-9a-f]{64})$');
    IF parts IS NULL THEN
        RETURN NULL;
    END IF;
    names := string_to_array(parts[1], ',');
    IF NOT lower(setting) = ANY (SELECT lower(x) FROM unnest(names) x) THEN
        RETURN NULL;  -- rowgate did not seal this setting
    END IF;
    msg := convert_to('rowgate.seal.v1' || chr(10) || pg_backend_pid()::text || chr(10), 'UTF8');
    FOREACH n IN ARRAY names LOOP
        v := current_setting(n, true);
        IF v IS NULL THEN
            RETURN NULL;
        END IF;
        msg := msg || rowgate_private.netstring(n) || rowgate_private.netstring(v);
    END LOOP;
    IF encode(%I.hmac(msg, k, 'sha256'), 'hex') IS DISTINCT FROM parts[2] THEN
        RETURN NULL;
    END IF;
    RETURN nullif(current_setting(setting, true), '');
END
$body$
$fn$, crypto);
END
$outer$;
ALTER FUNCTION rowgate_private.verified_setting(text) OWNER TO rowgate_definer;
REVOKE ALL ON FUNCTION rowgate_private.verified_setting(text) FROM PUBLIC;

COMMENT ON FUNCTION rowgate_private.verified_setting(text) IS
    'The setting if rowgate sealed it in this transaction (or, with no key installed, as it is); NULL otherwise.';

-- The public helpers. PARALLEL RESTRICTED: pg_backend_pid() in a parallel
-- worker is the worker's, so the seal is checked in the leader.
CREATE OR REPLACE FUNCTION auth.user_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT rowgate_private.verified_setting('app.user_id') $$;
ALTER FUNCTION auth.user_id() OWNER TO rowgate_definer;

CREATE OR REPLACE FUNCTION auth.claims() RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT rowgate_private.verified_setting('request.jwt.claims')::jsonb $$;
ALTER FUNCTION auth.claims() OWNER TO rowgate_definer;

CREATE OR REPLACE FUNCTION auth.org_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT rowgate_private.verified_setting('app.org_id') $$;
ALTER FUNCTION auth.org_id() OWNER TO rowgate_definer;

CREATE OR REPLACE FUNCTION auth.setting(name text) RETURNS text
    LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT rowgate_private.verified_setting(name) $$;
ALTER FUNCTION auth.setting(text) OWNER TO rowgate_definer;

COMMENT ON FUNCTION auth.user_id() IS
    'Verified user id (JWT sub) of the current rowgate transaction; NULL outside one, and NULL when sealing is on and the seal does not match. Use as (select auth.user_id()) in policies.';
COMMENT ON FUNCTION auth.claims() IS
    'All verified JWT claims of the current rowgate transaction as jsonb; NULL outside one or when the seal does not match.';
COMMENT ON FUNCTION auth.org_id() IS
    'Active organisation id of the current rowgate transaction; NULL when none or when the seal does not match.';
COMMENT ON FUNCTION auth.setting(text) IS
    'Any identity setting rowgate injected (e.g. app.org_role), verified like auth.user_id(); NULL when not sealed by rowgate.';

GRANT EXECUTE ON FUNCTION auth.user_id(), auth.claims(), auth.org_id(), auth.setting(text) TO rowgate_user;
