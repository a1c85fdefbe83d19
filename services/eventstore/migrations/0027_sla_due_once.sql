-- The SLA due-time rule, once (domain.sla.deadline is the same rule, and a test holds them to each
-- other): a clock of `minutes` started at `started` is due at started + minutes. STABLE like the
-- timestamptz arithmetic it wraps, so the planner inlines it where it is used.
CREATE FUNCTION ticketing_sla_due(started timestamptz, minutes integer) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT started + make_interval(mins => minutes) $$;

-- The same rule solved for the start: a clock of `minutes` is due by `at` if it started at or
-- before this. Range conditions on the creation time keep their index this way.
CREATE FUNCTION ticketing_sla_started_by(at timestamptz, minutes integer) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT at - make_interval(mins => minutes) $$;
