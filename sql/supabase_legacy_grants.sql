-- Legacy Supabase default privileges (projects created before mid-2026).
--
-- Why: older projects grant every new table, sequence and function in `public`
-- to anon, authenticated and service_role, to the role that runs migrations. The
-- migrations must be right under this setting as well as under none; the test
-- suite applies this file to one of its two template databases to prove it.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
