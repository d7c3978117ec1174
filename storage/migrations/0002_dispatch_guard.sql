-- One statement per dispatcher batch: a guard that aborts the statement (and so rolls the
-- whole batch back) when a guarded write changed a different number of rows than decided.
-- Its SQLSTATEs are translated in storage/errors.py: keep them in sync.
CREATE FUNCTION dispatcher_guard(what text, decided bigint, changed bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    IF decided IS DISTINCT FROM changed THEN
        IF what = 'fence' THEN
            RAISE EXCEPTION 'another dispatcher leads now (epoch moved on)'
                USING ERRCODE = 'TSF01';
        END IF;
        RAISE EXCEPTION '%: % rows changed where % were decided', what, changed, decided
            USING ERRCODE = 'TSD01';
    END IF;
    RETURN 0;
END;
$$;
