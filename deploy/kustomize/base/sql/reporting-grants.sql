-- Read-only access for Grafana's PostgreSQL datasource: SELECT on the tables the dashboards read,
-- nothing else (no auth tables, no API tokens). Run by the migrate Job after every migration, so
-- tables added by a release are granted too. psql variable :role is the reporting role's name.
-- Idempotent; tables that do not exist yet and a role that does not exist are skipped.
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'role')
WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('GRANT SELECT ON TABLE %I TO %I', t.name, :'role')
FROM unnest(ARRAY[
  'tracker_accessevent',
  'tracker_endpointstat',
  'analytics_hourlystat',
  'analytics_geostat'
]) AS t(name)
WHERE to_regclass(t.name) IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
