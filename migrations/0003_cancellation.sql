-- Who cancelled a run, and why. A cancelled run that was running also has
-- its interrupted attempt in `attempts` with outcome 'cancelled'.
alter table runs
    add column cancelled_by text,
    add column cancel_reason text,
    add constraint runs_cancelled_says_by_whom check ((state = 'cancelled') = (cancelled_by is not null)),
    add constraint runs_cancel_fields_length check (
        length(cancelled_by) <= 200 and length(cancel_reason) <= 500
    );
