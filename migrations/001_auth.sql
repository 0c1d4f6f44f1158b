-- rowgate: identity helpers for Row-Level Security policies.
--
-- rowgate sets these settings with set_config(name, value, true) inside every
-- client transaction, from a verified JWT:
--   app.user_id         the token's `sub` (Clerk: user_...)
--   request.jwt.claims  every claim, as JSON (PostgREST/Supabase name)
--   app.org_id          the active organisation (Clerk v2 `o.id` or v1 `org_id`)
-- Outside such a transaction they are unset or '' and these functions return
-- NULL, so policies match nothing: RLS fails closed.
--
-- In policies call them as `(select auth.user_id())`: the sub-select makes the
-- planner evaluate it once per statement instead of once per row.
-- Idempotent: safe to apply again.

CREATE SCHEMA IF NOT EXISTS auth;

CREATE OR REPLACE FUNCTION auth.user_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '') $$;

COMMENT ON FUNCTION auth.user_id() IS
    'Verified user id (JWT sub) of the current rowgate transaction, NULL outside one. Use as (select auth.user_id()) in policies.';

CREATE OR REPLACE FUNCTION auth.claims() RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb $$;

COMMENT ON FUNCTION auth.claims() IS
    'All verified JWT claims of the current rowgate transaction as jsonb, NULL outside one.';

CREATE OR REPLACE FUNCTION auth.org_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.org_id', true), '') $$;

COMMENT ON FUNCTION auth.org_id() IS
    'Active organisation id (Clerk o.id or org_id) of the current rowgate transaction, NULL when none.';

-- The role that rowgate's login role is granted, so it can use the helpers
-- and the tables an application exposes through rowgate.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rowgate_user') THEN
        CREATE ROLE rowgate_user NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA auth TO rowgate_user;
GRANT EXECUTE ON FUNCTION auth.user_id(), auth.claims(), auth.org_id() TO rowgate_user;
