-- rowgate: a hardened login role ("authenticator") for rowgate's upstream
-- connections. Not a migration (rowgate migrate does not apply it): run it
-- once per database, as a superuser or the database owner, after
-- `rowgate migrate`, with psql:
--
--   psql -v authenticator=authenticator -v dbname=app \
--        -f migrations/recipes/hardened_authenticator.sql "$ADMIN_URL"
--
-- What it does, and why (docs/security.md, "What the administrator must do"):
-- - the login role cannot do anything by itself (NOINHERIT): it gets its
--   privileges only by switching to rowgate_user inside each transaction, as
--   rowgate does with `[identity] role = "rowgate_user"` (or role_claim with
--   allowed_roles). A client that resets the role is left with nothing;
-- - no BYPASSRLS, no superuser, no CREATEROLE/CREATEDB/REPLICATION;
-- - no CREATE on any schema and no USAGE on procedural languages: a client
--   cannot define functions, aggregates, operators or views that run code
--   the guard cannot see, nor DO blocks;
-- - no TEMPORARY on the database: temporary tables outlive transactions on
--   pooled connections and shadow the next user's tables.
-- If your migrations run as a role that is not a superuser, grant it back
-- what it needs (e.g. GRANT USAGE ON LANGUAGE plpgsql, sql TO app_owner).

\set ON_ERROR_STOP on

ALTER ROLE :"authenticator" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;
GRANT rowgate_user TO :"authenticator";

-- rowgate_user is what clients act as: it must not create objects either.
ALTER ROLE rowgate_user NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOLOGIN;

-- No CREATE on any schema of this database, for PUBLIC, the login role or
-- rowgate_user.
SELECT format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC, %I, rowgate_user', nspname, :'authenticator')
FROM pg_namespace
WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
\gexec

-- No procedural languages (DO blocks, CREATE FUNCTION) for clients.
SELECT format('REVOKE USAGE ON LANGUAGE %I FROM PUBLIC, %I, rowgate_user', lanname, :'authenticator')
FROM pg_language
WHERE lanpltrusted
\gexec

-- No temporary objects.
REVOKE TEMPORARY ON DATABASE :"dbname" FROM PUBLIC;
REVOKE TEMPORARY ON DATABASE :"dbname" FROM :"authenticator", rowgate_user;

-- The login role must not be able to become the owner of the seal key.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rowgate_definer')
       AND (SELECT count(*) FROM pg_auth_members m
            JOIN pg_roles r ON r.oid = m.roleid
            WHERE r.rolname = 'rowgate_definer'
              AND m.member <> (SELECT oid FROM pg_roles WHERE rolname = current_user)) > 0 THEN
        RAISE WARNING 'rowgate_definer has members besides %: they can read the seal key', current_user;
    END IF;
END
$$;

-- Check: what the login role can do now.
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolbypassrls
FROM pg_roles WHERE rolname = :'authenticator';
