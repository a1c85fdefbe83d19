-- An org's webhook signing secret: generated on first use, shown once (revealed_at), rotated with
-- an overlap during which the previous one (valid_until) still signs.
ALTER TABLE org_secrets ADD COLUMN revealed_at timestamptz, ADD COLUMN valid_until timestamptz;
