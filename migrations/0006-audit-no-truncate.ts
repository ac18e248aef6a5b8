// The audit log is append-only: row triggers (0001) refuse UPDATE and DELETE, but a
// TRUNCATE fires no row trigger. A statement trigger refuses it too.
export const name = '0006-audit-no-truncate';

export const up: string[] = [
  `create trigger control_events_no_truncate before truncate on control_events
    for each statement execute function control_events_append_only()`,
];
