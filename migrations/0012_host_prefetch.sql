-- Hosts may hold dispatches beyond their running slots (HostRegistration
-- prefetch): the orchestrator sends each host up to capacity + prefetch
-- attempts.
alter table hosts add column prefetch integer not null default 0;
alter table hosts add constraint hosts_prefetch_non_negative check (prefetch >= 0);
