-- guard off
-- (RESET ALL below, which the guard refuses because it would clear the
-- identity too; with the guard off rowgate must do what PostgreSQL does.)
-- SHOW and SET of session parameters: a session's settings last until it
-- changes them, whatever transactions come between (a second client uses
-- the pool between steps).

show server_version_num

show standard_conforming_strings

show client_encoding

show application_name

show search_path

set search_path = public, auth

show search_path

select current_schemas(false)

select auth.user_id()

set statement_timeout = '5min'

set application_name = 'conformance'

show statement_timeout

select current_setting('application_name'), current_setting('statement_timeout')

begin; select current_setting('statement_timeout'); commit

begin

set local statement_timeout = '1s'

show statement_timeout

commit

show statement_timeout

set datestyle = 'SQL, DMY'

select '2024-03-01'::date::text

set intervalstyle = 'iso_8601'

select interval '1 day 2 hours'

set timezone = 'Asia/Tokyo'

select '2024-01-01 00:00:00+00'::timestamptz::text

set session characteristics as transaction isolation level repeatable read

select current_setting('transaction_isolation')

set client_min_messages = warning

do $$ begin raise notice 'hidden'; raise warning 'shown'; end $$

reset all

show statement_timeout

show search_path

select '2024-03-01'::date::text, current_setting('application_name')

set myapp.custom = 'kept'

select current_setting('myapp.custom', true)

reset myapp.custom
